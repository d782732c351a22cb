// The store queue at scale, on both stores: claims walk the index of ready records (records waiting out a
// back-off are neither claimed early nor in the way), recovery still gives back a dead consumer's claims,
// and the depth figures read from the queue counts stay exact through every kind of change.
import { randomUUID } from 'node:crypto';

import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';

import { createLogger } from '../../src/log.js';
import type { QueueCounts } from '../../src/queue/queue-counts.js';
import { readyRecords } from '../../src/queue/inline-claims.js';
import {
  claimStatement,
  countDelayedStatement,
  DELAYED_COUNT_CAP,
  LISTENING_POLL_MS,
  StoreQueueBackend,
  WAKEUP_CHANNEL,
} from '../../src/queue/store-queue.js';
import { batonChannel } from '../../src/store/baton-schema.js';
import type { Store } from '../../src/store/store.js';
import type { StoreSubject } from '../support/store-subjects.js';
import { STORE_SUBJECTS } from '../support/store-subjects.js';

type Subject = StoreSubject;

const bytes = (text: string): Buffer => Buffer.from(text);
const texts = (records: readonly { payload: Buffer }[] | undefined): string[] =>
  (records ?? []).map((record) => record.payload.toString());
const HOUR_FROM_NOW = (): Date => new Date(Date.now() + 3_600_000);

describe.each(Object.keys(STORE_SUBJECTS))('store queue at scale on %s', (kind) => {
  let subject: Subject;
  let queue: string;
  beforeAll(async () => {
    subject = await (STORE_SUBJECTS[kind] as () => Promise<Subject>)();
  }, 60_000);
  afterAll(async () => {
    await subject?.dispose();
  });
  beforeEach(() => {
    queue = `q-${randomUUID().slice(0, 8)}`;
  });

  /** The figures counted from the rows, to hold the counts to. */
  async function counted(): Promise<QueueCounts> {
    const [row] = await subject.store.execute(sql`
      SELECT (SELECT count(*) FROM baton_queue_records WHERE queue = ${queue} AND claimed_by IS NULL)::int AS depth,
             (SELECT count(*) FROM baton_queue_records WHERE queue = ${queue} AND claimed_by IS NOT NULL)::int AS in_flight,
             (SELECT count(*) FROM baton_queue_errors WHERE queue = ${queue})::int AS errors`);
    return {
      depth: Number(row?.['depth']),
      inFlight: Number(row?.['in_flight']),
      errors: Number(row?.['errors']),
    };
  }

  async function expectExact(expected: QueueCounts): Promise<void> {
    expect(await counted()).toEqual(expected);
    const { delayed, delayedCapped, deduplicated, ...counts } = await subject.backend.stats(queue);
    expect(counts).toEqual(expected);
    expect(deduplicated).toBeUndefined();
    // Counted by the index walk: the waiting records not due yet, as a count of the rows says.
    const [row] = await subject.store.execute(sql`
      SELECT count(*)::int AS n FROM baton_queue_records
      WHERE queue = ${queue} AND claimed_by IS NULL AND run_after > now()`);
    expect({ delayed, delayedCapped }).toEqual({ delayed: Number(row?.['n']), delayedCapped: undefined });
  }

  it('does not claim a record before its retry time, claims it once the time has come, in ready order', async () => {
    const { backend, store } = subject;
    await backend.publish(queue, [bytes('a'), bytes('b'), bytes('c')]);
    const first = await backend.claim(queue, 'c1', 1);
    expect(texts(first?.records)).toEqual(['a']);
    const record = first!.records[0]!;
    await backend.complete(first!, [{ record, error: 'boom', retryAt: HOUR_FROM_NOW() }]);
    await backend.publish(queue, [bytes('d')]);
    const next = await backend.claim(queue, 'c1', 10);
    expect(texts(next?.records)).toEqual(['b', 'c', 'd']);
    expect(await backend.claim(queue, 'c1', 10)).toBeUndefined();
    // The retry time passes (moved back rather than waited for).
    await store.execute(
      sql`UPDATE baton_queue_records SET run_after = now() - interval '1 second' WHERE id = ${record.id}::bigint`,
    );
    const again = await backend.claim(queue, 'c1', 10);
    expect(texts(again?.records)).toEqual(['a']);
    expect(again?.records[0]?.attempts).toBe(1);
  });

  it('claims a retried record once its retry time has come, on the clock', async () => {
    const { backend } = subject;
    await backend.publish(queue, [bytes('flaky')]);
    const batch = await backend.claim(queue, 'c1', 10);
    await backend.complete(batch!, [
      { record: batch!.records[0]!, error: 'boom', retryAt: new Date(Date.now() + 500) },
    ]);
    const again = await vi.waitFor(
      async () => {
        const claimed = await backend.claim(queue, 'c1', 10);
        if (!claimed) throw new Error('not yet');
        return claimed;
      },
      { timeout: 20_000, interval: 100 },
    );
    expect(texts(again.records)).toEqual(['flaky']);
  });

  it('claims ready records behind many waiting out a back-off, oldest ready first', async () => {
    const { backend, store } = subject;
    await store.execute(sql`
      INSERT INTO baton_queue_records (queue, payload, attempts, run_after)
      SELECT ${queue}, '\\x00'::bytea, 1, now() + interval '1 hour' FROM generate_series(1, 2000)`);
    await backend.publish(queue, [bytes('x'), bytes('y')]);
    await backend.publish(queue, [bytes('z')]);
    expect(texts((await backend.claim(queue, 'c1', 2))?.records)).toEqual(['x', 'y']);
    expect(texts((await backend.claim(queue, 'c1', 2))?.records)).toEqual(['z']);
    expect(await backend.claim(queue, 'c1', 2)).toBeUndefined();
    expect((await backend.stats(queue)).depth).toBe(2000);
  });

  it('ends an idle wait at once when the queue was woken during the claim that found nothing', async () => {
    const { backend } = subject;
    expect(await backend.claim(queue, 'c1', 10)).toBeUndefined();
    // Records published while that claim ran (its snapshot did not see them): the wake-up came first.
    backend.notify(queue);
    const started = performance.now();
    await backend.waitForRecords(queue, 30_000, new AbortController().signal);
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it("recovers a dead consumer's claims, with an attempt counted", async () => {
    const { backend } = subject;
    await backend.registerConsumer('alive', 'node-1');
    await backend.publish(queue, [bytes('r1'), bytes('r2'), bytes('r3')]);
    // A consumer that never heartbeats here, and is not this process's: dead.
    const lost = await backend.claim(queue, 'gone', 2);
    const kept = await backend.claim(queue, 'alive', 1);
    await expectExact({ depth: 0, inFlight: 3, errors: 0 });
    expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(2);
    await expectExact({ depth: 2, inFlight: 1, errors: 0 });
    const again = await backend.claim(queue, 'alive', 10);
    expect(texts(again?.records)).toEqual(texts(lost?.records));
    expect(again?.records.every((record) => record.attempts === 1 && record.orphaned === true)).toBe(true);
    expect(texts(kept?.records)).toEqual(['r3']);
    await backend.unregisterConsumer('alive');
  });

  it('keeps depth, in-flight and errors exact through ingest, claim, ack, fail, release, replay and drop', async () => {
    const { backend, store } = subject;
    await expectExact({ depth: 0, inFlight: 0, errors: 0 });
    await backend.publish(queue, ['a', 'b', 'c', 'd', 'e'].map(bytes));
    await expectExact({ depth: 5, inFlight: 0, errors: 0 });
    const batch = (await backend.claim(queue, 'c1', 4))!;
    await expectExact({ depth: 1, inFlight: 4, errors: 0 });
    const [a, b, c, d] = batch.records as [never, never, never, never];
    await backend.transaction((tx) => backend.acknowledge(tx, batch, [a]));
    await expectExact({ depth: 1, inFlight: 3, errors: 0 });
    await backend.settle(batch, {
      failures: [
        { record: b, error: 'retry', retryAt: HOUR_FROM_NOW() },
        { record: c, error: 'dead', retryAt: undefined },
      ],
      released: [d],
    });
    await expectExact({ depth: 3, inFlight: 0, errors: 1 });
    expect(await backend.replayErrors(queue, { limit: 10 })).toBe(1);
    await expectExact({ depth: 4, inFlight: 0, errors: 0 });
    const all = (await backend.claim(queue, 'c1', 10))!;
    await backend.complete(
      all,
      all.records.map((record) => ({ record, error: 'dead', retryAt: undefined })),
    );
    await expectExact({ depth: 1, inFlight: 0, errors: 3 });
    const errors = await backend.listErrors(queue, { limit: 10 });
    expect(await backend.dropErrors(queue, [errors[0]!.id])).toBe(1);
    await expectExact({ depth: 1, inFlight: 0, errors: 2 });
    // Statements from outside Baton's code are counted too.
    await store.execute(sql`DELETE FROM baton_queue_errors WHERE queue = ${queue}`);
    await store.execute(
      sql`INSERT INTO baton_queue_records (queue, payload) VALUES (${queue}, '\\x01'), (${queue}, '\\x02')`,
    );
    await expectExact({ depth: 3, inFlight: 0, errors: 0 });
  });

  it('keeps the figures exact for inline claims', async () => {
    const { backend } = subject;
    if (!backend.inline) {
      // A server store has no inline ingest: its publishes are counted above.
      expect(kind).toBe('postgres');
      return;
    }
    const claim = (await backend.claimInline(queue, 'c1', [bytes('i1'), bytes('i2')]))!;
    await expectExact({ depth: 0, inFlight: 1, errors: 0 });
    await backend.transaction((tx) =>
      backend.settleInline(tx, claim, {
        failures: [
          { position: 0, error: 'retry', retryAt: HOUR_FROM_NOW() },
          { position: 1, error: 'dead', retryAt: undefined },
        ],
      }),
    );
    await expectExact({ depth: 1, inFlight: 0, errors: 1 });
  });

  it('folds many changes into one row, and stays exact', async () => {
    const { backend, store } = subject;
    for (let index = 0; index < 80; index += 1) await backend.publish(queue, [bytes(`r${index}`)]);
    const batch = (await backend.claim(queue, 'c1', 30))!;
    await backend.transaction((tx) => backend.acknowledge(tx, batch, batch.records.slice(0, 10)));
    await backend.stats(queue);
    const [rows] = await store.execute(
      sql`SELECT count(*)::int AS n FROM baton_queue_counts WHERE queue = ${queue}`,
    );
    expect(rows?.['n']).toBe(1);
    await expectExact({ depth: 50, inFlight: 20, errors: 0 });
  });

  it('takes back what TRUNCATE removed', async () => {
    const { backend, store } = subject;
    await backend.publish(queue, [bytes('a'), bytes('b')]);
    await backend.claim(queue, 'c1', 1);
    await store.execute(
      sql`INSERT INTO baton_queue_errors (queue, payload, attempts, error, enqueued_at) VALUES (${queue}, '\\x00', 1, 'x', now())`,
    );
    await expectExact({ depth: 1, inFlight: 1, errors: 1 });
    await store.execute(sql`TRUNCATE baton_queue_records, baton_queue_errors`);
    await expectExact({ depth: 0, inFlight: 0, errors: 0 });
  });

  describe('plans without statistics', () => {
    async function plan(statement: ReturnType<typeof sql>): Promise<string> {
      const rows = await subject.store.execute(sql`EXPLAIN ${statement}`);
      return rows.map((row) => String(row['QUERY PLAN'])).join('\n');
    }

    beforeEach(async () => {
      // Many records in back-off and many ready, in one queue among others; loaded after the migrations'
      // ANALYZE, so the planner has no statistics about them.
      await subject.store.execute(sql`
        INSERT INTO baton_queue_records (queue, payload, run_after)
        SELECT CASE WHEN n % 10 = 0 THEN 'other' ELSE ${queue} END, '\\x00'::bytea,
               now() + CASE WHEN n <= 20000 THEN interval '1 hour' ELSE interval '0' END
        FROM generate_series(1, 40000) AS n`);
      const [stats] = await subject.store.execute(
        sql`SELECT count(*)::int AS n FROM pg_stats WHERE tablename = 'baton_queue_records'`,
      );
      expect(stats?.['n']).toBe(0);
    });

    it('claims by walking the index of ready records, without a sort or a scan of the table', async () => {
      const text = await plan(claimStatement(queue, 'c1', 500, { batchId: undefined }));
      expect(text).toMatch(/Index Scan using baton_queue_records_due/);
      expect(text).toMatch(/Limit/);
      expect(text).not.toMatch(/Sort/);
      expect(text).not.toMatch(/Seq Scan/);
      expect(text).toMatch(/baton_queue_records_pkey/);
      expect(texts((await subject.backend.claim(queue, 'c1', 3))?.records)).toHaveLength(3);
    });

    it('answers whether ready records wait from the first entry of that index', async () => {
      const text = await plan(sql`SELECT EXISTS (${readyRecords(queue)})`);
      expect(text).toMatch(
        /Index Only Scan using baton_queue_records_due|Index Scan using baton_queue_records_due/,
      );
      expect(text).not.toMatch(/Seq Scan|Sort/);
    });

    it('counts the delayed records by a walk of that index, stopped at its cap', async () => {
      const text = await plan(countDelayedStatement(queue));
      expect(text).toMatch(
        /Index Only Scan using baton_queue_records_due|Index Scan using baton_queue_records_due/,
      );
      expect(text).toMatch(/Limit/);
      expect(text).not.toMatch(/Seq Scan|Sort/);
      // 18 000 records of the queue wait out an hour: more than the cap, and the figure says so.
      expect(await subject.backend.stats(queue)).toMatchObject({
        depth: 36_000,
        delayed: DELAYED_COUNT_CAP,
        delayedCapped: true,
      });
    });

    it("finds a queue's claimed rows for recovery by their index", async () => {
      const text = await plan(
        sql`SELECT id FROM baton_queue_records WHERE queue = ${queue} AND claimed_by IS NOT NULL
            AND claimed_by NOT IN (SELECT id FROM baton_consumers)`,
      );
      expect(text).toMatch(/baton_queue_records_held/);
      expect(text).not.toMatch(/Seq Scan on baton_queue_records/);
    });
  });

  // After the plans above: it gives the records table statistics.
  describe('upkeep', () => {
    async function tableStats(): Promise<{ dead: number; vacuums: number; analyzes: number }> {
      const [row] = await subject.store.execute(sql`
        SELECT n_dead_tup AS dead, vacuum_count AS vacuums, analyze_count AS analyzes
        FROM pg_stat_user_tables WHERE relid = to_regclass('baton_queue_records')`);
      return {
        dead: Number(row?.['dead']),
        vacuums: Number(row?.['vacuums']),
        analyzes: Number(row?.['analyzes']),
      };
    }

    it('vacuums and analyzes the records table once a drained backlog left more dead rows than live ones', async () => {
      const { store } = subject;
      await store.execute(sql`
        INSERT INTO baton_queue_records (queue, payload) SELECT ${queue}, '\\x00'::bytea FROM generate_series(1, 60000)`);
      // Every row of the table, those of the tests above too: dead rows then outnumber live ones.
      await store.execute(sql`DELETE FROM baton_queue_records`);
      await store.execute(sql`
        INSERT INTO baton_queue_records (queue, payload) SELECT ${queue}, '\\x00'::bytea FROM generate_series(1, 1000)`);
      const before = await tableStats();
      // Statistics reach the server's counters shortly after each transaction; each try is a backend of
      // its own, whose upkeep is due at once.
      await vi.waitFor(
        async () => {
          await new StoreQueueBackend(store).recoverClaims(queue, { maxAttempts: 3 });
          const after = await tableStats();
          expect(after.vacuums).toBeGreaterThan(before.vacuums);
          expect(after.analyzes).toBeGreaterThan(before.analyzes);
        },
        { timeout: 45_000, interval: 500 },
      );
      const [stats] = await store.execute(
        sql`SELECT count(*)::int AS n FROM pg_stats WHERE tablename = 'baton_queue_records'`,
      );
      expect(Number(stats?.['n'])).toBeGreaterThan(0);
    });
  });
});

/** Resolves once `backend` listens: a NOTIFY of our own ends a wait for `queue`. */
async function listening(backend: StoreQueueBackend, store: Store, queue: string): Promise<void> {
  await vi.waitFor(
    async () => {
      expect(await backend.claim(queue, 'c1', 10)).toBeUndefined();
      const abort = new AbortController();
      const woken = backend.waitForRecords(queue, 60_000, abort.signal).then(() => !abort.signal.aborted);
      await store.execute(sql`SELECT pg_notify(${batonChannel(store.schema, WAKEUP_CHANNEL)}, ${queue})`);
      const timer = setTimeout(() => abort.abort(), 1_000);
      const byNotify = await woken;
      clearTimeout(timer);
      if (!byNotify) throw new Error('no NOTIFY yet');
    },
    { timeout: 20_000, interval: 100 },
  );
}

describe('idle waits of a store queue on PostgreSQL, while it listens', () => {
  let subject: Subject;
  beforeAll(async () => {
    subject = await (STORE_SUBJECTS['postgres'] as () => Promise<Subject>)();
  }, 60_000);
  afterAll(async () => {
    await subject?.dispose();
  });

  it('sleeps until the earliest back-off of the queue ends, not the whole poll', async () => {
    const { backend, store } = subject;
    const queue = `q-${randomUUID().slice(0, 8)}`;
    await listening(backend, store, queue);
    await store.execute(sql`
      INSERT INTO baton_queue_records (queue, payload, attempts, run_after)
      VALUES (${queue}, '\\x00'::bytea, 1, now() + interval '2 seconds')`);
    expect(await backend.claim(queue, 'c1', 10)).toBeUndefined();
    const started = performance.now();
    await backend.waitForRecords(queue, 60_000, new AbortController().signal);
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThan(400);
    expect(waited).toBeLessThan(LISTENING_POLL_MS - 500);
    expect(texts((await backend.claim(queue, 'c1', 10))?.records)).toHaveLength(1);
  });

  it('an idle consumer of another node wakes in time for a delayed record, not at the end of its poll', async () => {
    const { backend, store } = subject;
    const queue = `q-${randomUUID().slice(0, 8)}`;
    const other = new StoreQueueBackend(store, createLogger({ level: 'silent' }));
    await other.start();
    try {
      await listening(other, store, queue);
      expect(await other.claim(queue, 'c2', 10)).toBeUndefined();
      const started = performance.now();
      // Published by this node: the other one learns of it by NOTIFY, then sleeps until it is due.
      await backend.publish(queue, [bytes('later')], { delays: { delayMs: 2_000 } });
      let claimed: string[] = [];
      while (claimed.length === 0) {
        await other.waitForRecords(queue, 60_000, new AbortController().signal);
        claimed = texts((await other.claim(queue, 'c2', 10))?.records);
        if (performance.now() - started > 60_000) throw new Error('never claimed');
      }
      const waited = performance.now() - started;
      expect(claimed).toEqual(['later']);
      expect(waited).toBeGreaterThanOrEqual(2_000);
      // Woken for its time: a consumer that knew nothing of it would have slept the whole poll.
      expect(waited).toBeLessThan(LISTENING_POLL_MS - 500);
    } finally {
      await other.close();
    }
  });

  it("a replay from the error queue wakes another node's idle consumer by NOTIFY, not by its poll", async () => {
    const { backend, store } = subject;
    const queue = `q-${randomUUID().slice(0, 8)}`;
    // Another node's consumer of the same queue: its own backend on the same database.
    const other = new StoreQueueBackend(store, createLogger({ level: 'silent' }));
    await other.start();
    try {
      await listening(other, store, queue);
      await store.execute(sql`INSERT INTO baton_queue_errors (queue, payload, attempts, error, enqueued_at)
        VALUES (${queue}, '\\x00'::bytea, 3, 'failed', now())`);
      expect(await other.claim(queue, 'c2', 10)).toBeUndefined();
      const started = performance.now();
      const woken = other.waitForRecords(queue, 60_000, new AbortController().signal);
      expect(await backend.replayErrors(queue, { limit: 10 })).toBe(1);
      await woken;
      // The poll while listening is LISTENING_POLL_MS: a wake-up well before it came from the NOTIFY.
      expect(performance.now() - started).toBeLessThan(LISTENING_POLL_MS - 1_500);
      expect(texts((await other.claim(queue, 'c2', 10))?.records)).toHaveLength(1);
    } finally {
      await other.close();
    }
  });
});
