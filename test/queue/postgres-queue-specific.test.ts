// What the PostgreSQL queue in another database promises beyond the shared contract: the queue database and
// the sink commit apart, so the batch ledger in the sink decides what a recovery puts back (only what no
// committed transaction acknowledged), fences a consumer thought dead, and tells complete() which rows to
// delete. Also: the config refuses the backend without its url, and the url on other backends.
import { randomUUID } from 'node:crypto';

import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { resolveConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import type { ClaimedBatch } from '../../src/queue/backend.js';
import { ClaimLostError } from '../../src/errors.js';
import { PostgresQueueBackend } from '../../src/queue/postgres-queue.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { executeIn } from '../../src/store/store.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';

const text = (value: string): Buffer => Buffer.from(value);
const log = createLogger({ level: 'silent' });

describe('postgres queue in another database', () => {
  let sinkDatabase: TestDatabase;
  let queueDatabase: TestDatabase;
  /** The sink, where handlers write and the ledger lives. */
  let sink: Store;
  /** A connection of the test's own to the queue database, to look at its rows. */
  let queueRows: Store;
  let backend: PostgresQueueBackend;

  beforeAll(async () => {
    [sinkDatabase, queueDatabase] = await Promise.all([createTestDatabase(), createTestDatabase()]);
    const open = (url: string): Promise<Store> =>
      openPostgresStore(
        { kind: 'postgres', url, poolSize: 4, statementTimeoutMs: 0 },
        { log, startupTimeoutMs: 5000 },
      );
    sink = await open(sinkDatabase.url);
    await applyMigrations(sink, await builtinMigrations());
    backend = new PostgresQueueBackend({ url: queueDatabase.url, store: sink, log, poolSize: 4 });
    await backend.start({ startupTimeoutMs: 5000 });
    queueRows = await open(queueDatabase.url);
  });

  afterAll(async () => {
    await backend?.close();
    await queueRows?.close();
    await sink?.close();
    await Promise.all([sinkDatabase?.drop(), queueDatabase?.drop()]);
  });

  /** A queue and consumer names of the test's own. */
  function fresh(): { queue: string; consumer: (name: string) => string } {
    const queue = `q-${randomUUID().slice(0, 8)}`;
    return { queue, consumer: (name) => `${queue}-${name}` };
  }

  async function sinkTable(): Promise<string> {
    const table = `sink_${randomUUID().replace(/-/g, '').slice(0, 8)}`;
    await sink.execute(sql.raw(`CREATE TABLE ${table} (v text)`));
    return table;
  }

  async function sinkRows(table: string): Promise<string[]> {
    return (await sink.execute(sql.raw(`SELECT v FROM ${table} ORDER BY v`))).map((row) => String(row['v']));
  }

  /** The queue's rows in the queue database: payload, attempts and whether claimed, in id order. */
  async function records(queue: string): Promise<Array<[string, number, boolean]>> {
    const rows = await queueRows.execute(
      sql`SELECT payload, attempts, claimed_by IS NOT NULL AS claimed FROM baton_queue_records WHERE queue = ${queue} ORDER BY id`,
    );
    return rows.map((row) => [
      Buffer.from(row['payload'] as Uint8Array).toString(),
      Number(row['attempts']),
      row['claimed'] === true,
    ]);
  }

  /** The handler's transaction: writes the records at `positions` to the sink and acknowledges them. */
  function commit(table: string, batch: ClaimedBatch, positions: readonly number[]): Promise<void> {
    const chosen = positions.map((position) => batch.records[position]!);
    return sink.transaction(async (tx) => {
      for (const record of chosen) {
        await executeIn(
          tx,
          sql`INSERT INTO ${sql.identifier(table)} (v) VALUES (${record.payload.toString()})`,
        );
      }
      await backend.acknowledge(tx, batch, chosen);
    });
  }

  it('renames the ledger and writes the batch id on claimed rows', async () => {
    const { queue, consumer } = fresh();
    const [tables] = await sink.execute(sql`
      SELECT to_regclass('baton_batch_ledger') IS NOT NULL AS batch, to_regclass('baton_redis_ledger') IS NULL AS gone`);
    expect(tables).toEqual({ batch: true, gone: true });
    await backend.publish(queue, [text('a'), text('b')]);
    const batch = await backend.claim(queue, consumer('A'), 10);
    const rows = await queueRows.execute(
      sql`SELECT DISTINCT batch_id FROM baton_queue_records WHERE queue = ${queue}`,
    );
    expect(rows.map((row) => row['batch_id'])).toEqual([batch?.id]);
  });

  it('is exactly-once across a consumer crash: recovery puts back only unacknowledged records, with attempts 1', async () => {
    const { queue, consumer } = fresh();
    const table = await sinkTable();
    await backend.publish(queue, ['r0', 'r1', 'r2', 'r3'].map(text));
    // Consumer A never heartbeats: it is as dead as a crashed node.
    const batch = await backend.claim(queue, consumer('A'), 10);
    if (!batch) throw new Error('no batch');
    await commit(table, batch, [0, 2]);
    expect(await backend.stats(queue)).toMatchObject({ depth: 0, inFlight: 2 });

    expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(2);
    expect(await records(queue)).toEqual([
      ['r1', 1, false],
      ['r3', 1, false],
    ]);
    const [ledger] = await sink.execute(
      sql`SELECT outcome, acked FROM baton_batch_ledger WHERE batch_id = ${batch.id}`,
    );
    expect(ledger).toEqual({ outcome: 'recovered', acked: [0, 2] });
    const again = await backend.claim(queue, consumer('B'), 10);
    expect(again?.records.map((r) => [r.payload.toString(), r.attempts])).toEqual([
      ['r1', 1],
      ['r3', 1],
    ]);
    expect(await sinkRows(table)).toEqual(['r0', 'r2']);
  });

  it('acknowledges a whole batch without positions (acked NULL): complete and recovery delete all its rows', async () => {
    const { queue, consumer } = fresh();
    const table = await sinkTable();
    await backend.publish(queue, ['w0', 'w1', 'w2', 'w3'].map(text));
    const completed = await backend.claim(queue, consumer('A'), 2);
    const crashed = await backend.claim(queue, consumer('B'), 2);
    if (!completed || !crashed) throw new Error('no batch');
    await commit(table, completed, [0, 1]);
    await commit(table, crashed, [1, 0]);
    const ledger = await sink.execute(
      sql`SELECT acked FROM baton_batch_ledger WHERE batch_id IN (${completed.id}, ${crashed.id})`,
    );
    expect(ledger).toEqual([{ acked: null }, { acked: null }]);
    expect(await backend.stats(queue)).toMatchObject({ depth: 0, inFlight: 0 });

    await backend.complete(completed, []);
    expect(await records(queue)).toEqual([
      ['w2', 0, true],
      ['w3', 0, true],
    ]);
    // Consumer B never heartbeats: its batch is recovered, and the ledger shows all of it committed.
    expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(0);
    expect(await records(queue)).toEqual([]);
    expect(await sinkRows(table)).toEqual(['w0', 'w1', 'w2', 'w3']);
  });

  it('fences a recovered batch: its late acknowledgement throws ClaimLostError and commits nothing', async () => {
    const { queue, consumer } = fresh();
    const table = await sinkTable();
    await backend.publish(queue, [text('contested'), text('other')]);
    const stale = await backend.claim(queue, consumer('A'), 10);
    if (!stale) throw new Error('no batch');
    expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(2);

    await expect(commit(table, stale, [0])).rejects.toBeInstanceOf(ClaimLostError);
    expect(await sinkRows(table)).toEqual([]);
    // The runner then gives the batch back: a no-op, since the recovery already did.
    await backend.release(stale, stale.records);
    expect(await records(queue)).toEqual([
      ['contested', 1, false],
      ['other', 1, false],
    ]);
  });

  it('complete() deletes exactly the acknowledged rows and settles the failures', async () => {
    const { queue, consumer } = fresh();
    const table = await sinkTable();
    await backend.publish(queue, ['a', 'b', 'c', 'd', 'e'].map(text));
    const batch = await backend.claim(queue, consumer('A'), 10);
    if (!batch) throw new Error('no batch');
    const [a, , c] = batch.records;
    await commit(table, batch, [1, 3]); // one half of a bisected batch...
    await commit(table, batch, [4]); // ...and the other
    await backend.complete(batch, [
      { record: a!, error: 'boom', retryAt: new Date(Date.now() + 60_000) },
      { record: c!, error: 'bad', retryAt: undefined },
    ]);

    expect(await records(queue)).toEqual([['a', 1, false]]);
    const [error] = await backend.listErrors(queue, { limit: 10 });
    expect(error).toMatchObject({ payload: text('c'), attempts: 1, error: 'bad' });
    // The retried record waits out its back-off: it counts as delayed.
    expect(await backend.stats(queue)).toEqual({ depth: 1, delayed: 1, inFlight: 0, errors: 1 });
    expect(await sinkRows(table)).toEqual(['b', 'd', 'e']);
  });

  it('release gives back only what no committed part of the batch acknowledged', async () => {
    const { queue, consumer } = fresh();
    const table = await sinkTable();
    await backend.publish(queue, ['a', 'b', 'c', 'd'].map(text));
    const batch = await backend.claim(queue, consumer('A'), 10);
    if (!batch) throw new Error('no batch');
    await commit(table, batch, [0, 1]); // the first half committed, then the rest was undone
    await backend.release(batch, batch.records);

    expect(await records(queue)).toEqual([
      ['c', 0, false],
      ['d', 0, false],
    ]);
  });

  it('gives back a claim whose answer was lost without an attempt, minus what the ledger shows committed', async () => {
    const { queue, consumer } = fresh();
    const table = await sinkTable();
    const name = consumer('alive');
    await backend.registerConsumer(name, 'node-1');
    // Another process claims for this live consumer: this one does not hold the batch (its answer was lost).
    const other = new PostgresQueueBackend({ url: queueDatabase.url, store: sink, log, poolSize: 2 });
    try {
      await other.start({ startupTimeoutMs: 5000 });
      await backend.publish(queue, ['x', 'y', 'z'].map(text));
      const batch = await other.claim(queue, name, 10);
      if (!batch) throw new Error('no batch');
      await commit(table, batch, [1]);
      expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(0); // within its grace period
      await queueRows.execute(
        sql`UPDATE baton_queue_records SET claimed_at = now() - interval '1 minute' WHERE queue = ${queue}`,
      );
      expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(2);
      expect(await records(queue)).toEqual([
        ['x', 0, false],
        ['z', 0, false],
      ]);
    } finally {
      await other.close();
      await backend.unregisterConsumer(name);
    }
  });
});

describe('postgres queue config', () => {
  const options = { baseDir: '/srv/baton', env: {} };

  function configError(raw: unknown): ConfigError {
    try {
      resolveConfig(raw, options);
    } catch (error) {
      if (error instanceof ConfigError) return error;
      throw error;
    }
    throw new Error('expected a ConfigError');
  }

  it('requires a url for backend = "postgres", naming queues.<name>.url', () => {
    const error = configError({ queues: { ping: { handler: './h.js', backend: 'postgres' } } });
    expect(error.key).toBe('queues.ping.url');
    expect(error.message).toMatch(/required when backend = "postgres"/);
  });

  it('refuses a url on other backends, and a url that is not postgres://', () => {
    const onStore = configError({ queues: { ping: { handler: './h.js', url: 'postgres://db/queues' } } });
    expect(onStore.key).toBe('queues.ping.url');
    expect(onStore.message).toMatch(/only for backend = "postgres"/);
    const wrong = configError({
      queues: { ping: { handler: './h.js', backend: 'postgres', url: 'mysql://db/queues' } },
    });
    expect(wrong.key).toBe('queues.ping.url');
  });
});
