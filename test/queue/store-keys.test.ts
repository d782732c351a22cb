// Keys and idempotency ids on the store queue, on both stores: an ordered queue gives each key's records in
// id order, one claim at a time per key, round-robin across keys; a failed record holds back its key until it
// is due again; duplicates of an id within the window are dropped and counted; keys survive the error queue.
import { randomUUID } from 'node:crypto';

import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import type { ClaimedBatch } from '../../src/queue/backend.js';
import { insertRecordsStatement } from '../../src/queue/store-insert.js';
import { executeIn } from '../../src/store/store.js';
import type { StoreSubject } from '../support/store-subjects.js';
import { STORE_SUBJECTS } from '../support/store-subjects.js';

type Subject = StoreSubject;

const ORDERED = { ordering: 'key', dedupWindowMs: 60_000 } as const;
const bytes = (text: string): Buffer => Buffer.from(text);
const texts = (batch: ClaimedBatch | undefined): string[] =>
  (batch?.records ?? []).map((record) => record.payload.toString());

describe.each(Object.keys(STORE_SUBJECTS))('store queue keys on %s', (kind) => {
  // Tests of concurrent transactions, which PGlite (one connection) cannot hold: only defined on PostgreSQL,
  // never counted as skipped.
  const onPostgres = (name: string, test: () => Promise<void>, timeout?: number): void => {
    if (kind === 'postgres') it(name, test, timeout);
  };
  let subject: Subject;
  let queue: string;
  beforeAll(async () => {
    subject = await (STORE_SUBJECTS[kind] as (poolSize?: number) => Promise<Subject>)(6);
  }, 60_000);
  afterAll(async () => {
    await subject?.dispose();
  });
  beforeEach(() => {
    queue = `keys-${randomUUID().slice(0, 8)}`;
    subject.backend.configure(queue, ORDERED);
  });

  async function acknowledge(batch: ClaimedBatch): Promise<void> {
    await subject.store.transaction((tx) => subject.backend.acknowledge(tx, batch, batch.records));
    await subject.backend.complete(batch, []);
  }

  it('gives each key to one claim at a time, its records in publish order', async () => {
    const { backend } = subject;
    // Key a comes first (its turn is older), then b.
    await backend.publish(queue, [bytes('a1')], { keys: 'a' });
    await backend.publish(queue, ['b1', 'a2', 'b2', 'a3'].map(bytes), { keys: ['b', 'a', 'b', 'a'] });
    await backend.publish(queue, [bytes('plain')]);
    const first = await backend.claim(queue, 'c1', 3);
    // Round by round: the first record of each key, then the second…; unkeyed records fill the rest.
    expect(texts(first).sort()).toEqual(['a1', 'a2', 'b1']);
    expect(first?.records.map((record) => record.key).sort()).toEqual(['a', 'a', 'b']);
    // Both keys are held: another consumer gets only the unkeyed record.
    const second = await backend.claim(queue, 'c2', 10);
    expect(texts(second)).toEqual(['plain']);
    if (!first || !second) throw new Error('nothing claimed');
    await acknowledge(first);
    await acknowledge(second);
    const third = await backend.claim(queue, 'c2', 10);
    expect(texts(third)).toEqual(['b2', 'a3']);
  });

  it('holds back the records of a key behind its failed record until that is due, and keeps their order', async () => {
    const { backend } = subject;
    await backend.publish(queue, ['k1', 'k2', 'k3', 'o1'].map(bytes), { keys: ['k', 'k', 'k', 'o'] });
    const batch = await backend.claim(queue, 'c1', 10);
    if (!batch) throw new Error('nothing claimed');
    const [k1, k2, k3, o1] = batch.records;
    if (!k1 || !k2 || !k3 || !o1) throw new Error('missing records');
    expect(texts(batch)).toEqual(['k1', 'k2', 'k3', 'o1']);
    // k1 committed, k2 failed, k3 held back (given back before the failure is settled), o1 committed.
    await subject.store.transaction((tx) => backend.acknowledge(tx, batch, [k1, o1]));
    await backend.release(batch, [k3]);
    const retryAt = new Date(Date.now() + 1_500);
    await backend.complete(batch, [{ record: k2, error: 'boom', retryAt }]);
    expect(await backend.claim(queue, 'c2', 10)).toBeUndefined();
    let retried: ClaimedBatch | undefined;
    const deadline = Date.now() + 30_000;
    while (!retried && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      retried = await backend.claim(queue, 'c2', 10);
    }
    expect(Date.now()).toBeGreaterThanOrEqual(retryAt.getTime() - 50);
    expect(texts(retried)).toEqual(['k2', 'k3']);
    expect(retried?.records.map((record) => record.attempts)).toEqual([1, 0]);
  });

  it('serves a key published after 200 000 records of another key within the next claim', async () => {
    const { backend } = subject;
    const backlog = Array.from({ length: 200_000 }, (_, index) => bytes(`hot-${index}`));
    for (let start = 0; start < backlog.length; start += 20_000) {
      await backend.publish(queue, backlog.slice(start, start + 20_000), { keys: 'hot' });
    }
    await backend.publish(queue, [bytes('cold')], { keys: 'cold' });
    const batch = await backend.claim(queue, 'c1', 500);
    expect(texts(batch)).toContain('cold');
    expect(texts(batch).filter((text) => text.startsWith('hot-'))).toEqual(
      Array.from({ length: 250 }, (_, index) => `hot-${index}`),
    );
  }, 120_000);

  it('drops a record whose idempotency id was seen within the window, and counts it', async () => {
    const { backend } = subject;
    const records = Array.from({ length: 10_000 }, (_, index) => bytes(`r${index}`));
    const ids = records.map((_, index) => `id-${index}`);
    expect(await backend.publish(queue, records, { ids })).toBe(10_000);
    expect(await backend.publish(queue, records, { ids })).toBe(10_000);
    // The same id twice in one publish: the first is kept.
    await backend.publish(queue, [bytes('x'), bytes('x-again')], { ids: ['x', 'x'] });
    const stats = await backend.stats(queue);
    expect(stats.depth).toBe(10_001);
    expect(stats.deduplicated).toBe(10_001);
    // Past the window, the id is new again.
    const short = `${queue}-short`;
    backend.configure(short, { ordering: 'none', dedupWindowMs: 200 });
    await backend.publish(short, [bytes('once')], { ids: 'same' });
    await new Promise((resolve) => setTimeout(resolve, 400));
    await backend.publish(short, [bytes('twice')], { ids: 'same' });
    expect((await backend.stats(short)).depth).toBe(2);
  });

  it('keeps the key through the error queue; a replayed record goes behind what followed it', async () => {
    const { backend } = subject;
    await backend.publish(queue, ['e1', 'e2'].map(bytes), { keys: 'e' });
    const batch = await backend.claim(queue, 'c1', 1);
    const [e1] = batch?.records ?? [];
    if (!batch || !e1) throw new Error('nothing claimed');
    await backend.complete(batch, [{ record: e1, error: 'dead', retryAt: undefined }]);
    const next = await backend.claim(queue, 'c1', 10);
    expect(texts(next)).toEqual(['e2']);
    if (!next) throw new Error('nothing claimed');
    await backend.publish(queue, [bytes('e3')], { keys: 'e' });
    expect(await backend.replayErrors(queue, { limit: 10 })).toBe(1);
    await acknowledge(next);
    const after = await backend.claim(queue, 'c1', 10);
    expect(texts(after)).toEqual(['e3', 'e1']);
    expect(after?.records.map((record) => record.key)).toEqual(['e', 'e']);
  });

  it('gives back a dead consumer’s keyed claim in order, with an attempt counted', async () => {
    const { backend, store } = subject;
    await backend.publish(queue, ['d1', 'd2', 'd3'].map(bytes), { keys: 'd' });
    const batch = await backend.claim(queue, 'dead-consumer', 2);
    expect(texts(batch)).toEqual(['d1', 'd2']);
    // The consumer of another process died: on a shared store its heartbeat row is gone; on an exclusive
    // store every consumer but this process's own is dead.
    await store.execute(sql`DELETE FROM baton_consumers WHERE id = 'dead-consumer'`);
    expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(2);
    const again = await backend.claim(queue, 'c2', 10);
    expect(texts(again)).toEqual(['d1', 'd2', 'd3']);
    expect(again?.records.map((record) => record.attempts)).toEqual([1, 1, 0]);
  });

  it('removes the key of a drained key, and a key that comes back works', async () => {
    const { backend, store } = subject;
    await backend.publish(queue, [bytes('only')], { keys: 'gone' });
    const batch = await backend.claim(queue, 'c1', 10);
    if (!batch) throw new Error('nothing claimed');
    await acknowledge(batch);
    expect(await backend.claim(queue, 'c1', 10)).toBeUndefined();
    const keys = await store.execute(sql`SELECT key FROM baton_queue_keys WHERE queue = ${queue}`);
    expect(keys).toEqual([]);
    await backend.publish(queue, [bytes('back')], { keys: 'gone' });
    expect(texts(await backend.claim(queue, 'c1', 10))).toEqual(['back']);
  });

  it('takes at most half a batch from a key while others have work: two claims over 4 hot keys get 2 keys each', async () => {
    const { backend } = subject;
    const keys = ['h1', 'h2', 'h3', 'h4'];
    const records = Array.from({ length: 400 }, (_, index) => bytes(`${keys[index % 4]}-${index}`));
    await backend.publish(queue, records, { keys: records.map((_, index) => keys[index % 4] as string) });
    const first = await backend.claim(queue, 'c1', 100);
    const second = await backend.claim(queue, 'c2', 100);
    const keysOf = (batch: ClaimedBatch | undefined): string[] =>
      [...new Set((batch?.records ?? []).map((record) => record.key))].sort() as string[];
    // Keys published together take their turns in no particular order: each claim gets two of them.
    expect(keysOf(first)).toHaveLength(2);
    expect(keysOf(second)).toHaveLength(2);
    expect([...keysOf(first), ...keysOf(second)].sort()).toEqual(keys);
    expect(first?.records).toHaveLength(100);
    expect(second?.records).toHaveLength(100);
  });

  it('publishes to an existing key without writing a new version of its row', async () => {
    const { backend, store } = subject;
    await backend.publish(queue, [bytes('v1')], { keys: 'v' });
    const row = sql`SELECT ctid::text AS ctid, xmin::text AS xmin FROM baton_queue_keys WHERE queue = ${queue}`;
    const [before] = await store.execute(row);
    await backend.publish(queue, [bytes('v2'), bytes('v3')], { keys: 'v' });
    await backend.replayErrors(queue, { limit: 10 });
    expect(await store.execute(row)).toEqual([before]);
  });

  onPostgres(
    'locks an existing key while a transaction adds records to it, so that it is not removed meanwhile',
    async () => {
      const { store } = subject;
      await subject.backend.publish(queue, [bytes('l1')], { keys: 'l' });
      let release: () => void = () => undefined;
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      let inserted: () => void = () => undefined;
      const insertedNow = new Promise<void>((resolve) => {
        inserted = resolve;
      });
      const writer = store.transaction(async (tx) => {
        await executeIn(
          tx,
          insertRecordsStatement({
            queue,
            records: [bytes('l2')],
            options: { keys: 'l' },
            settings: ORDERED,
          }),
        );
        inserted();
        await held;
      });
      await insertedNow;
      const locked = await store.transaction((tx) =>
        executeIn(tx, sql`SELECT key FROM baton_queue_keys WHERE queue = ${queue} FOR UPDATE SKIP LOCKED`),
      );
      release();
      await writer;
      expect(locked).toEqual([]);
    },
  );

  onPostgres(
    'never gives a record to two of four consumers claiming at once, and keeps each key in order',
    async () => {
      const { backend } = subject;
      const total = 20_000;
      const keyCount = 2_000;
      const keyOf = (index: number): string => `k${index % keyCount}`;
      for (let start = 0; start < total; start += 5_000) {
        const indexes = Array.from({ length: 5_000 }, (_, offset) => start + offset);
        await backend.publish(
          queue,
          indexes.map((index) => bytes(String(index))),
          { keys: indexes.map(keyOf) },
        );
      }
      const seen = new Set<string>();
      let twice = 0;
      const order = new Map<string, number[]>();
      const consume = async (consumer: string): Promise<void> => {
        let idle = 0;
        while (seen.size < total && idle < 50) {
          const batch = await backend.claim(queue, consumer, 97);
          if (!batch) {
            idle += 1;
            await new Promise((resolve) => setTimeout(resolve, 20));
            continue;
          }
          idle = 0;
          for (const record of batch.records) {
            const index = Number(record.payload.toString());
            if (seen.has(record.id)) twice += 1;
            seen.add(record.id);
            order.set(keyOf(index), [...(order.get(keyOf(index)) ?? []), index]);
          }
          await acknowledge(batch);
        }
      };
      await Promise.all(['c1', 'c2', 'c3', 'c4'].map(consume));
      expect(twice).toBe(0);
      expect(seen.size).toBe(total);
      const outOfOrder = [...order.values()].filter((indexes) =>
        indexes.some((index, at) => at > 0 && index < (indexes[at - 1] as number)),
      );
      expect(outOfOrder).toEqual([]);
    },
    120_000,
  );
});
