// Keys and idempotency ids on the store queue, on both stores: an ordered queue gives each key's records in
// id order, one claim at a time per key, round-robin across keys; a failed record holds back its key until it
// is due again; duplicates of an id within the window are dropped and counted; keys survive the error queue.
import { randomUUID } from 'node:crypto';

import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import type { ClaimedBatch } from '../../src/queue/backend.js';
import type { StoreSubject } from '../support/store-subjects.js';
import { STORE_SUBJECTS } from '../support/store-subjects.js';

type Subject = StoreSubject;

const ORDERED = { ordering: 'key', dedupWindowMs: 60_000 } as const;
const bytes = (text: string): Buffer => Buffer.from(text);
const texts = (batch: ClaimedBatch | undefined): string[] =>
  (batch?.records ?? []).map((record) => record.payload.toString());

describe.each(Object.keys(STORE_SUBJECTS))('store queue keys on %s', (kind) => {
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
});
