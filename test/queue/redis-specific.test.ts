// What the Redis queue backend promises beyond the shared contract: Azafea's wire format (raw bytes LPUSHed
// by any producer, `errors-<queue>` with raw bytes), exactly-once into the sink across a consumer crash
// through the ledger, fencing of a consumer thought dead, and BLMOVE wake-ups that leave the record in place.
import { sql } from 'drizzle-orm';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { BackendUnavailableError } from '../../src/errors.js';
import type { ClaimedBatch } from '../../src/queue/backend.js';
import { ClaimLostError } from '../../src/errors.js';
import { RedisQueueBackend } from '../../src/queue/redis.js';
import { openBatch } from '../../src/queue/redis-batch.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { executeIn } from '../../src/store/store.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { TestRedis } from '../support/redis.js';
import { openTestRedis } from '../support/redis.js';

const text = (value: string): Buffer => Buffer.from(value);
const QUEUES = 17;

describe('redis queue backend', () => {
  let redis: TestRedis;
  let database: TestDatabase;
  let store: Store;
  let backend: RedisQueueBackend;
  const logLines: string[] = [];
  const queues: string[] = [];
  let nextQueue = 0;

  beforeAll(async () => {
    redis = await openTestRedis();
    database = await createTestDatabase();
    const log = pino({ level: 'warn' }, { write: (line: string) => logLines.push(line) });
    store = await openPostgresStore(
      { kind: 'postgres', url: database.url, poolSize: 4, statementTimeoutMs: 0 },
      { log, startupTimeoutMs: 5000 },
    );
    await applyMigrations(store, await builtinMigrations());
    for (let index = 0; index < QUEUES; index++) queues.push(redis.queue());
    // Each queue's list has a key other than its name, as `[queues.x] key = "..."` allows.
    const keys = Object.fromEntries(queues.map((queue) => [queue, `${queue}-list`]));
    backend = new RedisQueueBackend({ url: redis.url, store, log, keys });
    await backend.start();
  });

  afterAll(async () => {
    await backend?.close();
    await redis?.cleanup();
    await store?.close();
    await database?.drop();
  });

  /** A queue of the test's own, its Redis list, and consumer names under the file's prefix. */
  function fresh(): { queue: string; key: string; consumer: (name: string) => string } {
    const queue = queues[nextQueue++];
    if (!queue) throw new Error('raise QUEUES');
    return { queue, key: `${queue}-list`, consumer: (name) => `${queue}-${name}` };
  }

  async function sinkTable(): Promise<string> {
    const table = `sink_${Math.random().toString(36).slice(2, 10)}`;
    await store.execute(sql.raw(`CREATE TABLE ${table} (v text)`));
    return table;
  }

  async function sinkRows(table: string): Promise<string[]> {
    return (await store.execute(sql.raw(`SELECT v FROM ${table} ORDER BY v`))).map((row) => String(row['v']));
  }

  /** The handler's transaction: writes the records to the sink and acknowledges them. */
  function commit(table: string, batch: ClaimedBatch, positions: readonly number[]): Promise<void> {
    const records = positions.map((position) => batch.records[position]!);
    return store.transaction(async (tx) => {
      for (const record of records) {
        await executeIn(
          tx,
          sql`INSERT INTO ${sql.identifier(table)} (v) VALUES (${record.payload.toString()})`,
        );
      }
      await backend.acknowledge(tx, batch, records);
    });
  }

  it('delivers exactly the bytes a producer LPUSHed itself, oldest first', async () => {
    const { queue, key, consumer } = fresh();
    const stamp = Buffer.alloc(8);
    stamp.writeBigInt64BE(1_700_000_000_000_000n); // Azafea's producer prefixes an 8-byte timestamp
    const azafea = Buffer.concat([stamp, text('{"ping":1}')]);
    const notUtf8 = Buffer.from([0xff, 0xfe, 0x00, 0x3a, 0x80, 0xc3, 0x28]);
    await redis.client.lpush(key, azafea);
    await redis.client.lpush(key, notUtf8, Buffer.alloc(0), text('last'));

    const batch = await backend.claim(queue, consumer('c'), 10);
    expect(batch?.records.map((record) => record.payload)).toEqual([
      azafea,
      notUtf8,
      Buffer.alloc(0),
      text('last'),
    ]);
    expect(batch?.records.map((record) => record.attempts)).toEqual([0, 0, 0, 0]);
    expect(await redis.client.llen(key)).toBe(0);
    // The batch is kept in Redis with the same bytes, and their attempts.
    const processing = `${key}:processing:${consumer('c')}:${batch!.id}`;
    expect(openBatch((await redis.client.getBuffer(processing))!)).toEqual({
      payloads: [azafea, notUtf8, Buffer.alloc(0), text('last')],
      attempts: [0, 0, 0, 0],
    });

    // And what Baton publishes is what an Azafea consumer pops: raw bytes at the left.
    await backend.publish(queue, [notUtf8, azafea]);
    expect(await redis.client.rpopBuffer(key)).toEqual(notUtf8);
    expect(await redis.client.rpopBuffer(key)).toEqual(azafea);
  });

  it('is exactly-once across a consumer crash: only unacknowledged records come back, with one attempt', async () => {
    const { queue, key, consumer } = fresh();
    const table = await sinkTable();
    await backend.publish(queue, ['r0', 'r1', 'r2', 'r3'].map(text));
    // Consumer A was never registered: it is as dead as a crashed node once its key expired.
    const batch = await backend.claim(queue, consumer('A'), 10);
    if (!batch) throw new Error('no batch');
    await commit(table, batch, [0, 2]);

    expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(2);
    expect(await redis.client.exists(`${key}:processing:${consumer('A')}:${batch.id}`)).toBe(0);
    const again = await backend.claim(queue, consumer('B'), 10);
    expect(again?.records.map((r) => [r.payload.toString(), r.attempts])).toEqual([
      ['r1', 1],
      ['r3', 1],
    ]);
    expect(await sinkRows(table)).toEqual(['r0', 'r2']);
    expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(2); // B is not registered either
    expect(await backend.stats(queue)).toMatchObject({ depth: 2, inFlight: 0 });
  });

  /**
   * Another client runs a claim under `consumer`: the batch exists, but this process never saw it, as when
   * the claim ran on Redis and its reply was lost with the connection. Resolves how many records it took.
   */
  async function claimElsewhere(queue: string, consumer: string): Promise<number> {
    const other = new RedisQueueBackend({
      url: redis.url,
      store,
      log: pino({ level: 'silent' }),
      keys: { [queue]: `${queue}-list` },
    });
    await other.start();
    try {
      return (await other.claim(queue, consumer, 10))?.records.length ?? 0;
    } finally {
      await other.close();
    }
  }

  it("recovers a batch of this process's own consumer that it does not hold (a claim whose reply was lost)", async () => {
    const { queue, consumer } = fresh();
    const own = consumer('own');
    await backend.registerConsumer(own, 'node');
    try {
      await backend.publish(queue, ['lost-1', 'lost-2'].map(text));
      expect(await claimElsewhere(queue, own)).toBe(2);
      // First seen now; given back once the grace period (a claim may still be on its way back) is over.
      expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(0);
      await new Promise((resolve) => setTimeout(resolve, 5200));
      expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(2);
      const again = await backend.claim(queue, own, 10);
      expect(again?.records.map((r) => r.payload.toString())).toEqual(['lost-1', 'lost-2']);
      if (again) await backend.complete(again, []);
    } finally {
      await backend.unregisterConsumer(own);
    }
  }, 20_000);

  it('recovers such a batch while the recovery passes of another queue of the process run in between', async () => {
    const { queue, consumer } = fresh();
    const { queue: neighbour } = fresh();
    const own = consumer('own');
    await backend.registerConsumer(own, 'node');
    try {
      await backend.publish(queue, [text('lost-3')]);
      expect(await claimElsewhere(queue, own)).toBe(1);
      expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(0);
      // Each queue's runner looks for claims to recover every second; the other queue's passes must not
      // start this batch's grace period over (they once forgot every batch not of their own queue).
      const graceOver = Date.now() + 5200;
      while (Date.now() < graceOver) {
        await backend.recoverClaims(neighbour, { maxAttempts: 5 });
        await new Promise((resolve) => setTimeout(resolve, 400));
      }
      expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(1);
    } finally {
      await backend.unregisterConsumer(own);
    }
  }, 20_000);

  it('fences a consumer thought dead: its late acknowledgement throws ClaimLostError and nothing commits', async () => {
    const { queue, consumer } = fresh();
    const table = await sinkTable();
    await backend.publish(queue, [text('contested')]);
    const stale = await backend.claim(queue, consumer('A'), 10);
    if (!stale) throw new Error('no batch');
    expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(1);

    await expect(commit(table, stale, [0])).rejects.toBeInstanceOf(ClaimLostError);
    expect(await sinkRows(table)).toEqual([]);
    // The runner then gives the batch back: a no-op, since the recovery already did.
    await backend.release(stale, stale.records);
    const next = await backend.claim(queue, consumer('B'), 10);
    expect(next?.records.map((r) => [r.payload.toString(), r.attempts])).toEqual([['contested', 1]]);
    expect(await backend.claim(queue, consumer('B'), 10)).toBeUndefined();
  });

  it('gives back only what a committed part of the batch did not acknowledge', async () => {
    const { queue, consumer } = fresh();
    const table = await sinkTable();
    await backend.publish(queue, ['a', 'b', 'c', 'd'].map(text));
    const batch = await backend.claim(queue, consumer('C'), 10);
    if (!batch) throw new Error('no batch');
    await commit(table, batch, [0, 1]); // the first half of a bisected batch committed
    await backend.release(batch, batch.records); // then the rest was undone

    const again = await backend.claim(queue, consumer('C'), 10);
    expect(again?.records.map((r) => [r.payload.toString(), r.attempts])).toEqual([
      ['c', 0],
      ['d', 0],
    ]);
    expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(2); // only the new batch's records
  });

  it('acknowledges a whole batch without positions (acked NULL): recovery gives none of it back', async () => {
    const { queue, key, consumer } = fresh();
    const table = await sinkTable();
    await backend.publish(queue, ['w0', 'w1', 'w2'].map(text));
    const batch = await backend.claim(queue, consumer('A'), 10);
    if (!batch) throw new Error('no batch');
    await store.transaction(async (tx) => {
      await executeIn(tx, sql`INSERT INTO ${sql.identifier(table)} (v) VALUES ('w0'), ('w1'), ('w2')`);
      await backend.acknowledge(tx, batch, batch.records);
    });
    const [ledger] = await store.execute(
      sql`SELECT outcome, acked FROM baton_batch_ledger WHERE batch_id = ${batch.id}`,
    );
    expect(ledger).toEqual({ outcome: 'committed', acked: null });
    expect(await backend.stats(queue)).toMatchObject({ depth: 0, inFlight: 0 });

    // Consumer A is dead before it completed the batch: the recovery finds every record acknowledged.
    expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(0);
    expect(await redis.client.exists(`${key}:processing:${consumer('A')}:${batch.id}`)).toBe(0);
    expect(await redis.client.hexists(`${key}:batches`, batch.id)).toBe(0);
    expect(await backend.claim(queue, consumer('B'), 10)).toBeUndefined();
    expect(await sinkRows(table)).toEqual(['w0', 'w1', 'w2']);
    // A late release of that batch gives nothing back either.
    await backend.release(batch, batch.records);
    expect(await backend.stats(queue)).toEqual({ depth: 0, delayed: 0, inFlight: 0, errors: 0 });
  });

  it('frees the processing list of a batch completed without failures with its consumer’s next claim', async () => {
    const { queue, key, consumer } = fresh();
    const table = await sinkTable();
    await backend.publish(queue, ['c0', 'c1', 'c2'].map(text));
    const first = await backend.claim(queue, consumer('C'), 2);
    if (!first) throw new Error('no batch');
    await commit(table, first, [0, 1]);
    await backend.complete(first, []);
    const processing = `${key}:processing:${consumer('C')}:${first.id}`;
    expect(await redis.client.exists(processing)).toBe(1);

    const second = await backend.claim(queue, consumer('C'), 10);
    expect(second?.records.map((r) => r.payload.toString())).toEqual(['c2']);
    expect(await redis.client.exists(processing)).toBe(0);
    expect(await redis.client.hget(`${key}:batches`, first.id)).toBeNull();

    // When no claim of that consumer follows, a timer frees it.
    await commit(table, second!, [0]);
    await backend.complete(second!, []);
    await vi.waitFor(
      async () => {
        expect(await redis.client.hlen(`${key}:batches`)).toBe(0);
      },
      { timeout: 3000, interval: 50 },
    );
    expect(await redis.client.exists(`${key}:processing:${consumer('C')}:${second!.id}`)).toBe(0);
    expect(await sinkRows(table)).toEqual(['c0', 'c1', 'c2']);
  });

  it('recovers a batch kept as a list of envelopes by an earlier version', async () => {
    const { queue, key, consumer } = fresh();
    const id = 'batch-of-an-earlier-version';
    await redis.client.rpush(`${key}:processing:${consumer('old')}:${id}`, '0:first', '', '2:third');
    await redis.client.hset(`${key}:batches`, id, consumer('old'));
    expect(await backend.stats(queue)).toMatchObject({ depth: 0, inFlight: 3 });

    expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(2);
    const again = await backend.claim(queue, consumer('new'), 10);
    expect(again?.records.map((r) => [r.payload.toString(), r.attempts])).toEqual([
      ['first', 1],
      ['third', 3],
    ]);
  });

  it('keeps raw bytes in errors-<queue>, as Azafea replay-errors expects, with details beside them', async () => {
    const { queue, key, consumer } = fresh();
    const bad = Buffer.from([0xc3, 0x28, 0x00, 0xff]);
    await backend.publish(queue, [bad, text('second'), text('third')]);
    const batch = await backend.claim(queue, consumer('c'), 10);
    if (!batch) throw new Error('no batch');
    const before = Date.now();
    await backend.complete(
      batch,
      batch.records.map((record, index) => ({ record, error: `Error: bad ${index}`, retryAt: undefined })),
    );

    // The error list is named after the queue, not its key, and holds the raw bytes, newest on the left.
    expect(await redis.client.lrangeBuffer(`errors-${queue}`, 0, -1)).toEqual([
      text('third'),
      text('second'),
      bad,
    ]);
    const errors = await backend.listErrors(queue, { limit: 10 });
    expect(errors.map((e) => [e.payload, e.attempts, e.error])).toEqual([
      [bad, 1, 'Error: bad 0'],
      [text('second'), 1, 'Error: bad 1'],
      [text('third'), 1, 'Error: bad 2'],
    ]);
    expect(errors.every((e) => /^\d+$/.test(e.id) && e.failedAt.getTime() >= before - 1000)).toBe(true);
    const [first, second, third] = errors;
    expect((await backend.listErrors(queue, { limit: 1, afterId: first!.id })).map((e) => e.id)).toEqual([
      second!.id,
    ]);

    // Azafea's replay-errors moves the oldest raw record back by itself; Baton's view stays consistent.
    await redis.client.rpoplpush(`errors-${queue}`, key);
    expect((await backend.listErrors(queue, { limit: 10 })).map((e) => [e.id, e.error])).toEqual([
      [second!.id, 'Error: bad 1'],
      [third!.id, 'Error: bad 2'],
    ]);
    expect(await backend.replayErrors(queue, { limit: 10 })).toBe(2);
    expect(await redis.client.lrangeBuffer(key, 0, -1)).toEqual([text('third'), text('second'), bad]);
    expect(await backend.stats(queue)).toMatchObject({ depth: 3, errors: 0 });
    expect(await redis.client.exists(`errors-${queue}:ids`, `errors-${queue}:meta`)).toBe(0);
    const replayed = await backend.claim(queue, consumer('c'), 10);
    expect(replayed?.records.map((r) => [r.payload, r.attempts])).toEqual([
      [bad, 0],
      [text('second'), 0],
      [text('third'), 0],
    ]);
  });

  it('gives ids to records another program pushed to errors-<queue>', async () => {
    const { queue } = fresh();
    await redis.client.lpush(`errors-${queue}`, text('from azafea'));
    const [error] = await backend.listErrors(queue, { limit: 10 });
    expect(error).toMatchObject({ payload: text('from azafea'), attempts: 0 });
    expect(await backend.dropErrors(queue, [error!.id])).toBe(1);
    expect(await redis.client.llen(`errors-${queue}`)).toBe(0);
  });

  it('moves a recovered record out of attempts to the error queue', async () => {
    const { queue, consumer } = fresh();
    await backend.publish(queue, [text('poison')]);
    const first = await backend.claim(queue, consumer('A'), 10);
    if (!first) throw new Error('no batch');
    await backend.complete(first, [
      { record: first.records[0]!, error: 'boom', retryAt: new Date(Date.now() - 1) },
    ]);
    expect((await backend.claim(queue, consumer('A'), 10))?.records[0]?.attempts).toBe(1);

    expect(await backend.recoverClaims(queue, { maxAttempts: 2 })).toBe(1);
    expect(await redis.client.lrangeBuffer(`errors-${queue}`, 0, -1)).toEqual([text('poison')]);
    const [error] = await backend.listErrors(queue, { limit: 10 });
    expect(error).toMatchObject({ payload: text('poison'), attempts: 2 });
    expect(error?.error).toMatch(/stopped while processing/);
    expect(await backend.stats(queue)).toEqual({ depth: 0, delayed: 0, inFlight: 0, errors: 1 });
  });

  it('wakes a waiting consumer within 200 ms of a push by another client, leaving the record in place', async () => {
    const { queue, key, consumer } = fresh();
    let returned = false;
    const waiting = backend.waitForRecords(queue, 5000, new AbortController().signal).then(() => {
      returned = true;
    });
    // Part of the scenario, not a wait for a condition: the waiting call must not return while the list is empty.
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(returned).toBe(false);
    const pushedAt = Date.now();
    await redis.client.lpush(key, text('wake'));
    await waiting;
    expect(Date.now() - pushedAt).toBeLessThan(200);
    expect(await redis.client.lrangeBuffer(key, 0, -1)).toEqual([text('wake')]);
    expect((await backend.claim(queue, consumer('c'), 10))?.records.map((r) => r.payload)).toEqual([
      text('wake'),
    ]);
  });

  it('stops waiting at the timeout or when aborted', async () => {
    const { queue } = fresh();
    let started = Date.now();
    await backend.waitForRecords(queue, 300, new AbortController().signal);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(Date.now() - started).toBeLessThan(1500);

    const abort = new AbortController();
    started = Date.now();
    const waiting = backend.waitForRecords(queue, 10_000, abort.signal);
    setTimeout(() => abort.abort(), 50);
    await waiting;
    expect(Date.now() - started).toBeLessThan(500);
    // The connection it dropped is not reused; the next wait still works.
    const again = backend.waitForRecords(queue, 5000, new AbortController().signal);
    await backend.publish(queue, [text('x')]);
    await again;
  });

  it('keeps a registered consumer alive and forgets it once unregistered', async () => {
    const { consumer } = fresh();
    const name = consumer('alive');
    await backend.registerConsumer(name, 'node-1');
    expect(await redis.client.get(`baton:consumer:${name}`)).toBe('node-1');
    const ttl = await redis.client.pttl(`baton:consumer:${name}`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(3000);
    await backend.unregisterConsumer(name);
    expect(await redis.client.exists(`baton:consumer:${name}`)).toBe(0);
  });

  it('warns once at start when Redis is not durable enough for exactly-once across its crash', async () => {
    const [, appendonly] = (await redis.client.config('GET', 'appendonly')) as string[];
    const [, appendfsync] = (await redis.client.config('GET', 'appendfsync')) as string[];
    const durable = appendonly === 'yes' && appendfsync === 'always';
    const warnings = logLines.filter((line) => line.includes('appendonly yes and appendfsync always'));
    expect(warnings).toHaveLength(durable ? 0 : 1);
  });

  it('reports an unreachable Redis as BackendUnavailableError', async () => {
    const log = pino({ level: 'silent' });
    const down = new RedisQueueBackend({ url: 'redis://127.0.0.1:1', store, log });
    try {
      await expect(down.start({ startupTimeoutMs: 300 })).rejects.toBeInstanceOf(BackendUnavailableError);
      await expect(down.claim('q', 'c', 10)).rejects.toBeInstanceOf(BackendUnavailableError);
      await expect(down.publish('q', [text('x')])).rejects.toBeInstanceOf(BackendUnavailableError);
      await expect(down.waitForRecords('q', 1000, new AbortController().signal)).rejects.toBeInstanceOf(
        BackendUnavailableError,
      );
    } finally {
      await down.close();
    }
  });
});
