// The queue runner on a Redis queue into PostgreSQL: batches acknowledged whole (the ledger's NULL), the
// next batch claimed while one runs, a failing record isolated, and a drain that gives back what was claimed
// ahead, so that nothing stays claimed and a restart stores every record exactly once; on an ordered queue
// with key_concurrency = 2, one key's batches run two at a time and a failed record holds nothing back.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { resolveConfig } from '../../src/config/load.js';
import type { Handler } from '../../src/handler/handler.js';
import { createLogger } from '../../src/log.js';
import { queueSettings } from '../../src/queue/backend.js';
import { RecordProcessor } from '../../src/queue/processor.js';
import { RedisQueueBackend } from '../../src/queue/redis.js';
import { QueueRunner } from '../../src/queue/runner.js';
import type { RunnerContext } from '../../src/queue/runner.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { executeIn } from '../../src/store/store.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { TestRedis } from '../support/redis.js';
import { openTestRedis } from '../support/redis.js';

const log = createLogger({ level: 'silent' });
const RECORDS = 400;

describe('queue runner on a Redis queue', () => {
  let redis: TestRedis;
  let database: TestDatabase;
  let store: Store;
  let backend: RedisQueueBackend;
  let queue: string;

  beforeAll(async () => {
    redis = await openTestRedis();
    database = await createTestDatabase();
    store = await openPostgresStore(
      { kind: 'postgres', url: database.url, poolSize: 6, statementTimeoutMs: 0 },
      { log, startupTimeoutMs: 5000 },
    );
    await applyMigrations(store, await builtinMigrations());
    await store.execute(sql`CREATE TABLE sink (v text)`);
    queue = redis.queue();
    backend = new RedisQueueBackend({ url: redis.url, store, log });
    await backend.start();
  });

  afterAll(async () => {
    await backend?.close();
    await redis?.cleanup();
    await store?.close();
    await database?.drop();
  });

  /** Inserts each record; throws on "bad…" records; slow enough that a stop lands mid-run. */
  const handler: Handler = {
    queue: 'q',
    path: 'inline',
    schema: {},
    registerCommands: undefined,
    async run(tx, records) {
      if (records.some((record) => record.toString().startsWith('bad'))) throw new Error('bad record');
      await new Promise((resolve) => setTimeout(resolve, 20));
      const values = records.map((record) => record.toString());
      await executeIn(tx, sql`INSERT INTO sink (v) SELECT unnest(${sql.param(values)}::text[])`);
    },
  };

  function runner(consumer: string): QueueRunner {
    const config = resolveConfig(
      {
        queues: {
          [queue]: { handler: './h.js', backend: 'redis', batch_size: 10, concurrency: 2, max_attempts: 1 },
        },
        redis: { url: redis.url },
        store: { url: database.url },
      },
      { baseDir: '/tmp', env: {} },
    );
    const processor = new RecordProcessor({
      queue: config.queues[queue]!,
      handler,
      log,
      abort: new AbortController().signal,
    });
    return new QueueRunner({ processor, backend, store, consumer, log });
  }

  /** Starts a run as the supervisor would; its stop drains, then aborts the run and stops the runner. */
  function run(runner: QueueRunner): { stop(): Promise<void>; failures: unknown[] } {
    const controller = new AbortController();
    const failures: unknown[] = [];
    const ctx: RunnerContext = { signal: controller.signal, fail: (error) => failures.push(error) };
    runner.start(ctx);
    return {
      failures,
      async stop() {
        await runner.drain();
        controller.abort();
        await runner.stop();
      },
    };
  }

  async function stored(): Promise<{ rows: number; distinct: number }> {
    const [row] = await store.execute(
      sql`SELECT count(*)::int AS rows, count(DISTINCT v)::int AS distinct FROM sink`,
    );
    return { rows: Number(row?.['rows']), distinct: Number(row?.['distinct']) };
  }

  it('stops with nothing left claimed, and a restart stores every record once', async () => {
    const records = Array.from({ length: RECORDS }, (_, i) => Buffer.from(i === 123 ? 'bad-123' : `r${i}`));
    await backend.publish(queue, records);
    const consumer = `${queue}-consumer`;
    await backend.registerConsumer(consumer, 'node');
    const first = run(runner(consumer));
    await vi.waitFor(async () => expect((await stored()).rows).toBeGreaterThanOrEqual(50), {
      timeout: 10_000,
      interval: 20,
    });
    await first.stop();
    const stopped = await stored();
    expect(stopped.rows).toBeLessThan(RECORDS - 1);
    // The batches claimed ahead went back: what is not stored waits in the queue (or its error queue).
    const stats = await backend.stats(queue);
    expect(stats.inFlight).toBe(0);
    expect(stats.depth + stats.errors + stopped.rows).toBe(RECORDS);

    const second = run(runner(consumer));
    await vi.waitFor(async () => expect((await stored()).rows).toBe(RECORDS - 1), {
      timeout: 20_000,
      interval: 50,
    });
    await second.stop();
    expect([...first.failures, ...second.failures]).toEqual([]);
    expect(await stored()).toEqual({ rows: RECORDS - 1, distinct: RECORDS - 1 });
    expect((await backend.listErrors(queue, { limit: 10 })).map((e) => e.payload.toString())).toEqual([
      'bad-123',
    ]);
    // Whole batches were acknowledged without positions.
    const [ledger] = await store.execute(
      sql`SELECT count(*) FILTER (WHERE acked IS NULL)::int AS whole, count(*)::int AS batches FROM baton_batch_ledger`,
    );
    expect(Number(ledger?.['whole'])).toBeGreaterThan(Number(ledger?.['batches']) / 2);
    await backend.unregisterConsumer(consumer);
    expect(await backend.stats(queue)).toEqual({ depth: 0, delayed: 0, inFlight: 0, errors: 1 });
  }, 40_000);

  it('runs two batches of one key at once with key_concurrency = 2; a failed record is retried after later ones', async () => {
    const ordered = redis.queue();
    const config = resolveConfig(
      {
        queues: {
          [ordered]: {
            handler: './h.js',
            backend: 'redis',
            batch_size: 4,
            concurrency: 3,
            max_attempts: 20,
            retry_delay_ms: 200,
            retry_max_delay_ms: 500,
            ordering: 'key',
            key_concurrency: 2,
          },
        },
        redis: { url: redis.url },
        store: { url: database.url },
      },
      { baseDir: '/tmp', env: {} },
    );
    const queueConfig = config.queues[ordered]!;
    // Rows numbered as they are inserted (a row's place in the heap is not its order).
    await store.execute(sql`CREATE TABLE keyed_sink (n bigserial, v text)`);
    backend.configure(ordered, queueSettings(queueConfig));
    let running = 0;
    let most = 0;
    // k2 fails until k7 has run: were k2 to hold its key back, k7 would never run.
    let ranK7 = false;
    const keyed: Handler = {
      ...handler,
      async run(tx, records) {
        running += 1;
        most = Math.max(most, running);
        try {
          const values = records.map((record) => record.toString());
          if (!ranK7 && values.includes('k2')) throw new Error('k2 fails until k7 ran');
          await new Promise((resolve) => setTimeout(resolve, 30));
          await executeIn(tx, sql`INSERT INTO keyed_sink (v) SELECT unnest(${sql.param(values)}::text[])`);
          if (values.includes('k7')) ranK7 = true;
        } finally {
          running -= 1;
        }
      },
    };
    const total = 40;
    await backend.publish(
      ordered,
      Array.from({ length: total }, (_, i) => Buffer.from(`k${i}`)),
      { keys: 'K' },
    );
    const consumer = `${ordered}-consumer`;
    await backend.registerConsumer(consumer, 'node');
    const processor = new RecordProcessor({
      queue: queueConfig,
      handler: keyed,
      log,
      abort: new AbortController().signal,
    });
    const running_ = run(new QueueRunner({ processor, backend, store, consumer, log }));
    const rows = async (): Promise<string[]> =>
      (await store.execute(sql`SELECT v FROM keyed_sink ORDER BY n`)).map((row) => String(row['v']));
    await vi.waitFor(async () => expect(await rows()).toHaveLength(total), { timeout: 30_000, interval: 50 });
    await running_.stop();
    await backend.unregisterConsumer(consumer);
    expect(running_.failures).toEqual([]);
    expect(most).toBe(2);
    const order = await rows();
    expect(new Set(order).size).toBe(total);
    // k2 failed in its batch (which then ran without it) and ran again after its back-off, after later ones.
    expect(order.indexOf('k2')).toBeGreaterThan(order.indexOf('k7'));
    expect(await backend.stats(ordered)).toMatchObject({ depth: 0, inFlight: 0, errors: 0 });
  }, 40_000);
});
