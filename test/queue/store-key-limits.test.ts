// key_concurrency and key_rate_limit on the store queue, on both stores: up to N claims hold records of one
// key at once, each taking the key's first unclaimed, due records; a key runs at most its rate across claims,
// a window's worth at once, while the other keys go on.
import { randomUUID } from 'node:crypto';

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import type { ClaimedBatch, QueueSettings } from '../../src/queue/backend.js';
import type { StoreSubject } from '../support/store-subjects.js';
import { STORE_SUBJECTS } from '../support/store-subjects.js';

const bytes = (text: string): Buffer => Buffer.from(text);
const texts = (batch: ClaimedBatch | undefined): string[] =>
  (batch?.records ?? []).map((record) => record.payload.toString());
const numbered = (prefix: string, count: number): Buffer[] =>
  Array.from({ length: count }, (_, index) => bytes(`${prefix}${index}`));
const names = (prefix: string, from: number, to: number): string[] =>
  Array.from({ length: to - from }, (_, index) => `${prefix}${from + index}`);

describe.each(Object.keys(STORE_SUBJECTS))('store queue key limits on %s', (kind) => {
  let subject: StoreSubject;
  let queue: string;
  beforeAll(async () => {
    subject = await (STORE_SUBJECTS[kind] as (poolSize?: number) => Promise<StoreSubject>)(4);
  }, 60_000);
  afterAll(async () => {
    await subject?.dispose();
  });
  beforeEach(() => {
    queue = `limits-${randomUUID().slice(0, 8)}`;
  });

  function configure(settings: Partial<QueueSettings>): void {
    subject.backend.configure(queue, { ordering: 'key', dedupWindowMs: 60_000, ...settings });
  }

  async function acknowledge(batch: ClaimedBatch | undefined): Promise<void> {
    if (!batch) throw new Error('nothing claimed');
    await subject.store.transaction((tx) => subject.backend.acknowledge(tx, batch, batch.records));
    await subject.backend.complete(batch, []);
  }

  it('lets two claims hold records of one key with key_concurrency 2, and a third only once one completes', async () => {
    const { backend } = subject;
    configure({ keyConcurrency: 2 });
    await backend.publish(queue, numbered('k', 30), { keys: 'k' });
    const first = await backend.claim(queue, 'c1', 10);
    const second = await backend.claim(queue, 'c2', 10);
    expect(texts(first)).toEqual(names('k', 0, 10));
    expect(texts(second)).toEqual(names('k', 10, 20));
    expect(await backend.claim(queue, 'c3', 10)).toBeUndefined();
    await acknowledge(first);
    expect(texts(await backend.claim(queue, 'c3', 10))).toEqual(names('k', 20, 30));
  });

  it('takes the records after a failed one while it waits out its back-off, with key_concurrency 2', async () => {
    const { backend } = subject;
    configure({ keyConcurrency: 2 });
    await backend.publish(queue, ['f0', 'f1', 'f2'].map(bytes), { keys: 'f' });
    const first = await backend.claim(queue, 'c1', 1);
    const [f0] = first?.records ?? [];
    if (!first || !f0) throw new Error('nothing claimed');
    await backend.complete(first, [{ record: f0, error: 'boom', retryAt: new Date(Date.now() + 60_000) }]);
    const next = await backend.claim(queue, 'c2', 1);
    expect(texts(next)).toEqual(['f1']);
    expect(texts(await backend.claim(queue, 'c3', 5))).toEqual(['f2']);
  });

  it('holds a key to its key_rate_limit across claims while the other keys go on', async () => {
    const { backend } = subject;
    configure({ keyRateLimit: 5 });
    await backend.publish(queue, numbered('r', 50), { keys: 'r' });
    const started = Date.now();
    const first = await backend.claim(queue, 'c1', 100);
    // A second's worth at once.
    expect(texts(first)).toEqual(names('r', 0, 5));
    await acknowledge(first);
    await backend.publish(queue, numbered('o', 3), { keys: 'o' });
    const other = await backend.claim(queue, 'c2', 100);
    expect(texts(other)).toEqual(names('o', 0, 3));
    await acknowledge(other);
    // Then the rate: 5 more by a second after the first claim, not before.
    const later: string[] = [];
    const deadline = Date.now() + 30_000;
    while (later.length < 5 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      const batch = await backend.claim(queue, 'c3', 100);
      if (batch) {
        later.push(...texts(batch));
        await acknowledge(batch);
      }
    }
    const elapsed = Date.now() - started;
    expect(later).toEqual(names('r', 5, 5 + later.length));
    expect(later.length).toBeGreaterThanOrEqual(5);
    // Within t seconds of the first claim a key runs at most rate × (t + 1) records.
    expect(5 + later.length).toBeLessThanOrEqual(5 * (elapsed / 1000 + 1));
  });
});
