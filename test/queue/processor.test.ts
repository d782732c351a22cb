// The record processor: failures isolated by bisection under savepoints, at log2 cost, with deadlines.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { resolveConfig } from '../../src/config/load.js';
import type { Handler } from '../../src/handler/handler.js';
import { createLogger } from '../../src/log.js';
import { RecordProcessor } from '../../src/queue/processor.js';
import type { Tx } from '../../src/store/store.js';
import { executeIn } from '../../src/store/store.js';
import type { TempStore } from '../support/pglite.js';
import { openTempStore } from '../support/pglite.js';

const log = createLogger({ level: 'silent' });
let temp: TempStore;

beforeAll(async () => {
  temp = await openTempStore();
  await temp.store.execute(sql`CREATE TABLE sink (v text PRIMARY KEY)`);
});
afterAll(async () => temp.dispose());

function queueConfig(overrides: Record<string, unknown> = {}) {
  const config = resolveConfig(
    { queues: { q: { handler: './h.js', max_attempts: 3, retry_delay_ms: 1000, ...overrides } } },
    { baseDir: '/tmp', env: {} },
  );
  return config.queues['q']!;
}

/** A handler that inserts each record and throws on records that read "bad…"; counts its calls. */
function insertingHandler(mode: 'batch' | 'single'): Handler & { calls: number } {
  const handler = {
    queue: 'q',
    path: 'inline',
    schema: {},
    registerCommands: undefined,
    calls: 0,
    async run(tx: Tx, records: readonly Buffer[]) {
      handler.calls += 1;
      if (mode === 'batch' && records.some((r) => r.toString().startsWith('bad')))
        throw new Error('bad record in batch');
      for (const record of records) {
        if (record.toString().startsWith('bad')) throw new Error(`bad record ${record.toString()}`);
        await executeIn(tx, sql`INSERT INTO sink (v) VALUES (${record.toString()})`);
      }
    },
  };
  return handler;
}

/** A handler that runs `run`. */
function handlerRunning(run: Handler['run']): Handler {
  return { queue: 'q', path: 'inline', schema: {}, registerCommands: undefined, run };
}

async function sinkValues(): Promise<string[]> {
  return (await temp.store.execute(sql`SELECT v FROM sink ORDER BY v`)).map((row) => String(row['v']));
}

describe('RecordProcessor', () => {
  it('isolates one bad record in a batch of 64 in at most 1 + 2·log2(64) handler calls', async () => {
    const handler = insertingHandler('batch');
    const processor = new RecordProcessor({
      queue: queueConfig(),
      handler,
      log,
      abort: new AbortController().signal,
    });
    const records = Array.from({ length: 64 }, (_, i) =>
      Buffer.from(i === 37 ? 'bad-37' : `a${String(i).padStart(2, '0')}`),
    );
    const outcome = await temp.store.transaction((tx) => processor.run(tx, records));
    expect(outcome.failed).toEqual([{ index: 37, error: 'Error: bad record in batch' }]);
    expect(outcome.succeeded).toHaveLength(63);
    expect(handler.calls).toBeLessThanOrEqual(1 + 2 * 6);
    const stored = await sinkValues();
    expect(stored.filter((v) => v.startsWith('a'))).toHaveLength(63);
    expect(stored).not.toContain('bad-37');
  });

  it('with a one-record handler, a failure rolls back only that record', async () => {
    const handler = insertingHandler('single');
    const processor = new RecordProcessor({
      queue: queueConfig(),
      handler,
      log,
      abort: new AbortController().signal,
    });
    const records = ['b1', 'bad-x', 'b2', 'bad-y', 'b3'].map((v) => Buffer.from(v));
    const outcome = await temp.store.transaction((tx) => processor.run(tx, records));
    expect(outcome.failed.map((f) => f.index)).toEqual([1, 3]);
    expect(outcome.succeeded).toEqual([0, 2, 4]);
    expect((await sinkValues()).filter((v) => v.startsWith('b'))).toEqual(['b1', 'b2', 'b3']);
  });

  it('fails a handler call that passes its deadline, with the reason, and aborts its signal', async () => {
    let signalled = false;
    const handler = handlerRunning(
      (_tx, _records, ctx) =>
        new Promise<void>((resolve) => {
          ctx.signal.addEventListener('abort', () => {
            signalled = true;
            resolve();
          });
        }),
    );
    const processor = new RecordProcessor({
      queue: queueConfig({ timeout_ms: 100 }),
      handler,
      log,
      abort: new AbortController().signal,
    });
    const outcome = await temp.store.transaction((tx) => processor.run(tx, [Buffer.from('slow')]));
    expect(outcome.failed[0]?.error).toMatch(/timeout_ms \(100 ms\)/);
    expect(signalled).toBe(true);
  });

  it("fails a record whose statement the database refuses with the database's reason", async () => {
    await temp.store.execute(sql`CREATE TABLE stamped (v text NOT NULL, at timestamptz NOT NULL)`);
    const handler = handlerRunning(async (tx, records) => {
      for (const record of records) {
        await executeIn(tx, sql`INSERT INTO stamped (v) VALUES (${record.toString()})`);
      }
    });
    const processor = new RecordProcessor({
      queue: queueConfig(),
      handler,
      log,
      abort: new AbortController().signal,
    });
    const outcome = await temp.store.transaction((tx) => processor.run(tx, [Buffer.from('no time')]));
    expect(outcome.failed[0]?.error).toMatch(
      /^StatementError: null value in column "at" of relation "stamped" violates not-null constraint \(SQLSTATE 23502\)/,
    );
    // drizzle's report follows: which statement failed.
    expect(outcome.failed[0]?.error).toContain('Failed query: INSERT INTO stamped');
  });

  it('schedules retries with growing back-off, then the error queue after max_attempts', () => {
    const processor = new RecordProcessor({
      queue: queueConfig({ max_attempts: 3, retry_delay_ms: 1000, retry_max_delay_ms: 32000 }),
      handler: insertingHandler('single'),
      log,
      abort: new AbortController().signal,
    });
    const now = 1_000_000;
    const first = processor.retryAt(0, now)!.getTime() - now;
    const second = processor.retryAt(1, now)!.getTime() - now;
    expect(first).toBeGreaterThanOrEqual(800);
    expect(first).toBeLessThanOrEqual(1200);
    expect(second).toBeGreaterThanOrEqual(1600);
    expect(second).toBeLessThanOrEqual(2400);
    expect(processor.retryAt(2, now)).toBeUndefined();
  });
});
