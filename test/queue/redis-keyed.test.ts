// Redis queues with ordering = "key" and idempotency ids: each key's records in publish order and never in
// two batches at once across consumers of several processes, a failed record holding its key back, give-backs
// and recovery that keep the order (also of a batch whose give-back failed), the error queue and replay, raw
// records keyed by the handler's key() (also when a keyer dies halfway), fairness across keys, and dedup
// within the window. Against the machine's Redis, with a throwaway PostgreSQL database as the sink (its
// baton_batch_ledger holds acknowledgements).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { ClaimedBatch, ClaimedRecord, QueueSettings, RecordFailure } from '../../src/queue/backend.js';
import type { RedisQueueBackend } from '../../src/queue/redis.js';
import { KEYING_TAKE } from '../../src/queue/redis-keying.js';
import { runScript } from '../../src/redis/script.js';
import { waitFor } from '../support/group.js';
import type { RedisBackends } from '../support/redis-backends.js';
import { openRedisBackends } from '../support/redis-backends.js';
import type { TestRedis } from '../support/redis.js';

const text = (value: string): Buffer => Buffer.from(value);
const QUEUES = 20;
const ORDERED: QueueSettings = { ordering: 'key', dedupWindowMs: 60_000 };

describe('redis queue with ordering = "key"', () => {
  let services: RedisBackends;
  let redis: TestRedis;
  /** Three processes consuming the same queues. */
  let backends: readonly RedisQueueBackend[] = [];
  const queues: string[] = [];
  let nextQueue = 0;

  beforeAll(async () => {
    // Each queue's list has a key other than its name, as `[queues.x] key = "..."` allows.
    services = await openRedisBackends(3, (testRedis) => {
      for (let index = 0; index < QUEUES; index++) queues.push(testRedis.queue());
      return Object.fromEntries(queues.map((queue) => [queue, `${queue}-list`]));
    });
    ({ redis, backends } = services);
  });

  afterAll(async () => {
    await services?.close();
  });

  const backend = (): RedisQueueBackend => backends[0]!;

  /** A queue of the test's own, configured on every backend, and its Redis list. */
  function fresh(settings: QueueSettings = ORDERED): {
    queue: string;
    key: string;
    consumer: (name: string) => string;
  } {
    const queue = queues[nextQueue++];
    if (!queue) throw new Error('raise QUEUES');
    for (const each of backends) each.configure(queue, settings);
    return { queue, key: `${queue}-list`, consumer: (name) => `${queue}-${name}` };
  }

  const commit = (
    on: RedisQueueBackend,
    batch: ClaimedBatch,
    records: readonly ClaimedRecord[],
  ): Promise<void> => services.commit(on, batch, records);

  const payloads = (batch: ClaimedBatch | undefined): string[] =>
    batch?.records.map((record) => record.payload.toString()) ?? [];
  /** Each record of the batch as [payload, attempts]. */
  const tries = (batch: ClaimedBatch | undefined): Array<[string, number]> =>
    batch?.records.map((record) => [record.payload.toString(), record.attempts]) ?? [];

  async function publishKeyed(
    queue: string,
    records: ReadonlyArray<[key: string, payload: string]>,
  ): Promise<void> {
    await backend().publish(
      queue,
      records.map(([, payload]) => text(payload)),
      { keys: records.map(([key]) => key) },
    );
  }

  it('keeps each key in publish order across three processes claiming at once, one batch per key at a time', async () => {
    const { queue, consumer } = fresh();
    const keys = Array.from({ length: 30 }, (_, index) => `k${index}`);
    const published = new Map<string, string[]>(keys.map((key) => [key, []]));
    const batchOf = (count: number, from: number): Array<[string, string]> =>
      Array.from({ length: count }, (_, index) => {
        // Uneven keys: a few hot ones, many with a handful of records.
        const key = keys[(from + index) % 7 === 0 ? 0 : ((from + index) * 13) % keys.length]!;
        const payload = `${key}:${published.get(key)!.length}`;
        published.get(key)!.push(payload);
        return [key, payload];
      });
    await publishKeyed(queue, batchOf(2000, 0));
    const total = 3000;
    const processed = new Map<string, string[]>(keys.map((key) => [key, []]));
    const holder = new Map<string, string>();
    const violations: string[] = [];
    let done = 0;
    let late = false;

    async function consume(on: RedisQueueBackend, name: string): Promise<void> {
      const deadline = Date.now() + 60_000;
      while (done < total && Date.now() < deadline) {
        const batch = await on.claim(queue, consumer(name), 25);
        if (!batch) {
          await new Promise((resolve) => setTimeout(resolve, 5));
          continue;
        }
        const batchKeys = new Set(batch.records.map((record) => record.key ?? ''));
        for (const key of batchKeys) {
          const other = holder.get(key);
          if (other !== undefined) violations.push(`${key} claimed by ${batch.id} while ${other} holds it`);
          holder.set(key, batch.id);
        }
        for (const record of batch.records) processed.get(record.key!)!.push(record.payload.toString());
        await commit(on, batch, batch.records);
        for (const key of batchKeys) holder.delete(key);
        done += batch.records.length;
        await on.complete(batch, []);
        if (!late && done > 500) {
          // More records while the others are being consumed.
          late = true;
          await publishKeyed(queue, batchOf(1000, 2000));
        }
      }
    }
    await Promise.all(backends.map((on, index) => consume(on, `c${index}`)));

    expect(violations).toEqual([]);
    expect(done).toBe(total);
    for (const key of keys) expect(processed.get(key)).toEqual(published.get(key));
    expect(await backend().stats(queue)).toMatchObject({ depth: 0 });
  }, 90_000);

  it('holds a key back behind its failed record: the held-back records follow it after its retry', async () => {
    const { queue, consumer } = fresh();
    await publishKeyed(queue, [
      ['K', 'a0'],
      ['K', 'a1'],
      ['J', 'b0'],
      ['K', 'a2'],
      ['K', 'a3'],
    ]);
    const batch = await backend().claim(queue, consumer('A'), 10);
    expect(payloads(batch)).toEqual(['a0', 'a1', 'a2', 'a3', 'b0']);
    expect(batch!.records.map((record) => record.key)).toEqual(['K', 'K', 'K', 'K', 'J']);
    const [a0, a1, a2, a3, b0] = batch!.records as [ClaimedRecord, ...ClaimedRecord[]];
    // a1 fails: a0 and b0 commit; a2 and a3 did not run (or were rolled back).
    await commit(backend(), batch!, [a0, b0!]);
    await backend().release(batch!, [a2!, a3!]);
    const retryAt = new Date(Date.now() + 500);
    const failure: RecordFailure = { record: a1!, error: 'boom', retryAt };
    await backend().complete(batch!, [failure]);
    await publishKeyed(queue, [
      ['K', 'a4'],
      ['J', 'b1'],
    ]);

    // Until a1 is due, no record of K is claimed, by anyone; J goes on.
    const other = await backends[1]!.claim(queue, consumer('B'), 10);
    expect(payloads(other)).toEqual(['b1']);
    await commit(backends[1]!, other!, other!.records);
    await backends[1]!.complete(other!, []);
    expect(await backends[2]!.claim(queue, consumer('C'), 10)).toBeUndefined();

    const retried = await waitFor(
      async () => (await backends[2]!.claim(queue, consumer('C'), 10)) ?? undefined,
      10_000,
      'the retry of a1',
    );
    expect(Date.now()).toBeGreaterThanOrEqual(retryAt.getTime() - 50);
    expect(tries(retried)).toEqual([
      ['a1', 1],
      ['a2', 0],
      ['a3', 0],
      ['a4', 0],
    ]);
    await commit(backends[2]!, retried, retried.records);
    await backends[2]!.complete(retried, []);
    expect(await backend().stats(queue)).toMatchObject({ depth: 0, delayed: 0 });
  });

  it('lets go of a batch whose give-back of held-back records failed: recovery puts them back in order', async () => {
    const { queue, key, consumer } = fresh();
    const name = consumer('A');
    await backend().registerConsumer(name, 'node-a');
    try {
      await publishKeyed(queue, [
        ['K', 'a0'],
        ['K', 'a1'],
        ['K', 'a2'],
      ]);
      const batch = await backend().claim(queue, name, 10);
      const [, a1, a2] = batch!.records as [ClaimedRecord, ClaimedRecord, ClaimedRecord];
      // a0 failed, so a1 and a2 are held back; giving them back fails (Redis restarting, or as here K's list
      // of the wrong type). The runner then never completes the batch: recovery must settle it, although its
      // consumer is alive, as it does a batch whose completion failed.
      await redis.client.set(`${key}:key:K`, 'not a list');
      await expect(backend().release(batch!, [a1, a2])).rejects.toThrow(`${key}:key:K`);
      await redis.client.del(`${key}:key:K`);
      expect(await backends[1]!.claim(queue, consumer('B'), 10)).toBeUndefined(); // K is held

      const recovered = await waitFor(
        async () => (await backend().recoverClaims(queue, { maxAttempts: 5 })) || undefined,
        20_000,
        'the recovery of the batch',
      );
      expect(recovered).toBe(3);
      const again = await backends[1]!.claim(queue, consumer('B'), 10);
      expect(tries(again)).toEqual([
        ['a0', 1],
        ['a1', 1],
        ['a2', 1],
      ]);
    } finally {
      await backend().unregisterConsumer(name);
    }
  });

  it('gives a whole batch back at the head of each key, before what was published since', async () => {
    const { queue, consumer } = fresh();
    await publishKeyed(queue, [
      ['K', 'a0'],
      ['K', 'a1'],
      ['K', 'a2'],
      ['J', 'b0'],
    ]);
    const batch = await backend().claim(queue, consumer('A'), 3);
    expect(payloads(batch)).toEqual(['a0', 'a1', 'a2']);
    await publishKeyed(queue, [
      ['K', 'a3'],
      ['J', 'b1'],
    ]);
    // While the batch holds K, another claim takes only J.
    const other = await backends[1]!.claim(queue, consumer('B'), 10);
    expect(payloads(other)).toEqual(['b0', 'b1']);
    await backend().release(batch!, batch!.records);
    await backends[1]!.release(other!, other!.records);

    const again = await backends[2]!.claim(queue, consumer('C'), 10);
    expect(tries(again)).toEqual([
      ['a0', 0],
      ['a1', 0],
      ['a2', 0],
      ['a3', 0],
      ['b0', 0],
      ['b1', 0],
    ]);
  });

  it("recovers a dead consumer's keyed batch to the head of its keys, counting the attempt", async () => {
    const { queue, consumer } = fresh();
    await publishKeyed(queue, [
      ['K', 'a0'],
      ['K', 'a1'],
      ['K', 'a2'],
      ['J', 'b0'],
    ]);
    // Consumer A was never registered: it is as dead as a crashed node.
    const stale = await backend().claim(queue, consumer('A'), 10);
    await commit(backend(), stale!, [stale!.records[0]!]); // a0 committed before A died
    await publishKeyed(queue, [['K', 'a3']]);
    expect(await backends[1]!.claim(queue, consumer('B'), 10)).toBeUndefined(); // K and J are held

    expect(await backends[1]!.recoverClaims(queue, { maxAttempts: 5 })).toBe(3);
    const again = await backends[1]!.claim(queue, consumer('B'), 10);
    expect(tries(again)).toEqual([
      ['a1', 1],
      ['a2', 1],
      ['a3', 0],
      ['b0', 1],
    ]);
  });

  it('sends a keyed record to the error queue with its key; replay puts it at the tail of its key', async () => {
    const { queue, consumer } = fresh();
    await publishKeyed(queue, [
      ['K', 'a0'],
      ['K', 'a1'],
    ]);
    const batch = await backend().claim(queue, consumer('A'), 10);
    const [a0, a1] = batch!.records as [ClaimedRecord, ClaimedRecord];
    await backend().release(batch!, [a1]);
    const moved = await backend().complete(batch!, [
      { record: a0, error: 'no more attempts', retryAt: undefined },
    ]);
    const errorId = moved.get(a0.id);
    expect(errorId).toBeDefined();
    const meta = JSON.parse((await redis.client.hget(`errors-${queue}:meta`, errorId!)) ?? '{}') as {
      key?: string;
      error?: string;
    };
    expect(meta).toMatchObject({ key: 'K', error: 'no more attempts' });

    // Past max attempts in a recovery too: to the error queue with its key.
    const dead = await backend().claim(queue, consumer('dead'), 10);
    expect(payloads(dead)).toEqual(['a1']);
    await publishKeyed(queue, [['K', 'a2']]);
    expect(await backend().recoverClaims(queue, { maxAttempts: 1 })).toBe(1);
    const errors = await backend().listErrors(queue, { limit: 10 });
    expect(errors.map((record) => record.payload.toString())).toEqual(['a0', 'a1']);

    await publishKeyed(queue, [['K', 'a3']]);
    expect(await backend().replayErrors(queue, { ids: [errors[0]!.id], limit: 10 })).toBe(1);
    await publishKeyed(queue, [['K', 'a4']]);
    const after = await backend().claim(queue, consumer('B'), 10);
    expect(after?.records.map((record) => [record.payload.toString(), record.attempts, record.key])).toEqual([
      ['a2', 0, 'K'],
      ['a3', 0, 'K'],
      ['a0', 0, 'K'],
      ['a4', 0, 'K'],
    ]);
    expect(await backend().stats(queue)).toMatchObject({ errors: 1 });
  });

  it('wakes a waiting consumer when a key is put in line: by a publish, and by a batch that lets its key go', async () => {
    const { queue, consumer } = fresh();
    const signal = new AbortController().signal;
    expect(await backend().claim(queue, consumer('A'), 10)).toBeUndefined();
    const waitedFor = async (action: () => Promise<unknown>): Promise<number> => {
      const started = Date.now();
      const waiting = backend().waitForRecords(queue, 20_000, signal);
      await action();
      await waiting;
      return Date.now() - started;
    };
    expect(
      await waitedFor(() =>
        publishKeyed(queue, [
          ['K', 'a0'],
          ['K', 'a1'],
        ]),
      ),
    ).toBeLessThan(10_000);
    const batch = await backend().claim(queue, consumer('A'), 1);
    expect(payloads(batch)).toEqual(['a0']);
    // K is held: nothing is claimable until the batch lets it go.
    expect(await backend().claim(queue, consumer('A'), 10)).toBeUndefined();
    expect(await waitedFor(() => backend().release(batch!, batch!.records))).toBeLessThan(10_000);
    expect(payloads(await backend().claim(queue, consumer('A'), 10))).toEqual(['a0', 'a1']);
  });

  it('holds back the records of a key behind a delayed record of that key until it is due', async () => {
    const { queue, consumer } = fresh();
    await backend().publish(queue, [text('a0')], { keys: 'K', delays: { delayMs: 400 } });
    await publishKeyed(queue, [
      ['K', 'a1'],
      ['J', 'b0'],
    ]);
    expect(await backend().stats(queue)).toMatchObject({ depth: 3, delayed: 1 });
    const first = await backend().claim(queue, consumer('A'), 10);
    expect(payloads(first)).toEqual(['b0']);
    const due = await waitFor(
      async () => (await backend().claim(queue, consumer('A'), 10)) ?? undefined,
      10_000,
      'the delayed record',
    );
    expect(payloads(due)).toEqual(['a0', 'a1']);
  });

  /** key(): the `k` field of a JSON record; throws for a record that is not JSON. */
  const keyOf = (record: Buffer): string | undefined => (JSON.parse(record.toString()) as { k?: string }).k;
  const raw = (k: string | undefined, n: number): Buffer =>
    text(JSON.stringify(k === undefined ? { n } : { k, n }));

  it('keys records LPUSHed raw with key(); one it cannot key goes to the error queue with the reason', async () => {
    const { queue, key, consumer } = fresh({ ...ORDERED, keyOf });
    await redis.client.lpush(key, raw('K', 0), raw('J', 1), text('not json'), raw('K', 2), raw(undefined, 3));
    await publishKeyed(queue, [['K', JSON.stringify({ k: 'K', n: 4 })]]);
    const batch = await backend().claim(queue, consumer('A'), 10);
    const seen = batch?.records.map((record): unknown[] => [
      JSON.parse(record.payload.toString()),
      record.key,
    ]);
    // The record without a key is taken first (half of a claim may go to such records), then the keys in
    // line: K first, since n4 was published to it with its key before the raw records were keyed.
    expect(seen).toEqual([
      [{ n: 3 }, undefined],
      [{ k: 'K', n: 4 }, 'K'],
      [{ k: 'K', n: 0 }, 'K'],
      [{ k: 'K', n: 2 }, 'K'],
      [{ k: 'J', n: 1 }, 'J'],
    ]);
    const [error] = await backend().listErrors(queue, { limit: 10 });
    expect(error?.payload.toString()).toBe('not json');
    expect(error?.error).toMatch(/^key\(\) failed: SyntaxError/);
    expect(await redis.client.llen(key)).toBe(0);
  });

  it('loses and reorders nothing when a keyer dies halfway: the next one places its staged records first', async () => {
    const { queue, key, consumer } = fresh({ ...ORDERED, keyOf });
    await redis.client.lpush(key, ...Array.from({ length: 6 }, (_, n) => raw(n % 2 === 0 ? 'K' : 'J', n)));
    // A keyer took the lock and staged the records, then died before placing them.
    const staged = await runScript(
      redis.client,
      KEYING_TAKE,
      [key, `${key}:keying`, `${key}:keying:lock`],
      ['12345', 60_000, 4],
    );
    expect(staged).toHaveLength(4);
    await redis.client.lpush(key, raw('K', 6), raw('J', 7));
    // While its lock lives nobody keys; records already keyed are still claimed.
    expect(await backend().claim(queue, consumer('A'), 10)).toBeUndefined();
    expect(await redis.client.llen(`${key}:keying`)).toBe(4);
    await redis.client.pexpire(`${key}:keying:lock`, 1); // its time to live runs out
    await waitFor(
      async () => ((await redis.client.exists(`${key}:keying:lock`)) === 0 ? true : undefined),
      5000,
      'the lock to expire',
    );

    const claimed: string[] = [];
    let round = 0;
    await waitFor(
      async () => {
        const on = backends[round++ % 3]!;
        const batch = await on.claim(queue, consumer('B'), 10);
        for (const record of batch?.records ?? []) {
          claimed.push(`${record.key}:${(JSON.parse(record.payload.toString()) as { n: number }).n}`);
        }
        if (batch) await commit(on, batch, batch.records);
        if (batch) await on.complete(batch, []);
        return claimed.length >= 8 ? true : undefined;
      },
      10_000,
      'every record claimed',
    );
    expect(claimed.filter((entry) => entry.startsWith('K'))).toEqual(['K:0', 'K:2', 'K:4', 'K:6']);
    expect(claimed.filter((entry) => entry.startsWith('J'))).toEqual(['J:1', 'J:3', 'J:5', 'J:7']);
    expect(await redis.client.llen(`${key}:keying`)).toBe(0);
  });

  it('claims a new key within 3 claims of 500 behind one key with 200 000 records waiting', async () => {
    const { queue, consumer } = fresh();
    const chunk = Array.from({ length: 20_000 }, (_, index) => text(`hot-${index}`));
    for (let round = 0; round < 10; round++) await backend().publish(queue, chunk, { keys: 'hot' });
    await backend().publish(queue, [text('cold-0')], { keys: 'cold' });
    expect(await backend().stats(queue)).toMatchObject({ depth: 200_001 });
    let found = -1;
    for (let claim = 1; claim <= 3 && found < 0; claim++) {
      const batch = await backend().claim(queue, consumer('A'), 500);
      if (payloads(batch).includes('cold-0')) found = claim;
      await commit(backend(), batch!, batch!.records);
      await backend().complete(batch!, []);
    }
    expect(found).toBeGreaterThan(0);
    expect(found).toBeLessThanOrEqual(3);
  }, 60_000);

  it('drops records whose id was seen: 10 000 published twice are stored once and counted', async () => {
    const { queue, key } = fresh({ ordering: 'none', dedupWindowMs: 60_000 });
    const records = Array.from({ length: 10_000 }, (_, index) => text(`r${index}`));
    const ids = records.map((_, index) => `id-${index}`);
    expect(await backend().publish(queue, records, { ids })).toBe(10_000);
    expect(await backends[1]!.publish(queue, records, { ids })).toBe(10_000);
    expect(await redis.client.llen(key)).toBe(10_000);
    expect(await backend().stats(queue)).toMatchObject({ depth: 10_000, deduplicated: 10_000 });
    // Equal ids within one publish: the first is kept.
    expect(await backend().publish(queue, [text('x1'), text('x2')], { ids: ['same', 'same'] })).toBe(2);
    expect((await redis.client.lrange(key, 0, 0)).map(String)).toEqual(['x1']);
    expect(await backend().stats(queue)).toMatchObject({ deduplicated: 10_001 });
  }, 30_000);

  it('remembers an id for the dedup window only, on an ordered queue too', async () => {
    const { queue, key, consumer } = fresh({ ordering: 'key', dedupWindowMs: 300 });
    await backend().publish(queue, [text('first')], { keys: 'K', ids: ['once'] });
    await backend().publish(queue, [text('again')], { keys: 'K', ids: ['once'] });
    expect(await backend().stats(queue)).toMatchObject({ depth: 1, deduplicated: 1 });
    await waitFor(
      async () => ((await redis.client.exists(`${key}:dedup:once`)) === 0 ? true : undefined),
      5000,
      'the id to be forgotten',
    );
    await backend().publish(queue, [text('later')], { keys: 'K', ids: ['once'] });
    expect(payloads(await backend().claim(queue, consumer('A'), 10))).toEqual(['first', 'later']);
  });

  it('leaves a key list of the wrong type out of line, reports it, and goes on with the other keys', async () => {
    const { queue, key, consumer } = fresh();
    await publishKeyed(queue, [
      ['K', 'a0'],
      ['J', 'b0'],
    ]);
    await redis.client.del(`${key}:key:K`);
    await redis.client.set(`${key}:key:K`, 'not a list');
    expect(payloads(await backend().claim(queue, consumer('A'), 10))).toEqual(['b0']);
    expect(await backend().problems()).toContainEqual(
      expect.stringContaining(`key "${key}:key:K" holds a string`),
    );
    // A publish to that key is refused whole, naming the key.
    await expect(
      publishKeyed(queue, [
        ['K', 'a1'],
        ['J', 'b1'],
      ]),
    ).rejects.toThrow(`${key}:key:K`);
    await redis.client.del(`${key}:key:K`);
    expect(await backend().problems()).toEqual([]);
  });
});
