// Redis queues with ordering = "key" and key_concurrency above 1 or key_rate_limit: at most N batches hold
// records of one key across consumers of three processes, and every way a batch ends (completion, give-back,
// the error queue, recovery of a dead consumer's batch) lets go of its hold; a failed record does not hold its
// key back; a key's records run at its rate while other keys go on. Against the machine's Redis, with a
// throwaway PostgreSQL database as the sink (its baton_batch_ledger holds acknowledgements).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { ClaimedBatch, ClaimedRecord, QueueSettings } from '../../src/queue/backend.js';
import type { RedisQueueBackend } from '../../src/queue/redis.js';
import { waitFor } from '../support/group.js';
import type { RedisBackends } from '../support/redis-backends.js';
import { openRedisBackends } from '../support/redis-backends.js';
import type { TestRedis } from '../support/redis.js';

const text = (value: string): Buffer => Buffer.from(value);
const TWO: QueueSettings = { ordering: 'key', dedupWindowMs: 60_000, keyConcurrency: 2 };

describe('redis queue with ordering = "key": key_concurrency and key_rate_limit', () => {
  let services: RedisBackends;
  let redis: TestRedis;
  /** Three processes consuming the same queues. */
  let backends: readonly RedisQueueBackend[] = [];

  beforeAll(async () => {
    services = await openRedisBackends(3);
    ({ redis, backends } = services);
  });

  afterAll(async () => {
    await services?.close();
  });

  const [a, b, c] = [0, 1, 2].map((index) => (): RedisQueueBackend => backends[index]!) as [
    () => RedisQueueBackend,
    () => RedisQueueBackend,
    () => RedisQueueBackend,
  ];

  /** A queue of the test's own, configured on every backend (its list is its name). */
  function fresh(settings: QueueSettings): { queue: string; consumer: (name: string) => string } {
    const queue = redis.queue();
    for (const each of backends) each.configure(queue, settings);
    return { queue, consumer: (name) => `${queue}-${name}` };
  }

  async function publish(queue: string, key: string, payloads: readonly string[]): Promise<void> {
    await a().publish(queue, payloads.map(text), { keys: key });
  }

  const names = (count: number, from = 0): string[] =>
    Array.from({ length: count }, (_, index) => `r${from + index}`);
  const payloads = (batch: ClaimedBatch | undefined): string[] =>
    batch?.records.map((record) => record.payload.toString()) ?? [];
  const tries = (batch: ClaimedBatch | undefined): Array<[string, number]> =>
    batch?.records.map((record) => [record.payload.toString(), record.attempts]) ?? [];
  /** The batches holding `key` of `queue`, as Redis keeps them. */
  const holders = async (queue: string, key: string): Promise<string[]> =>
    ((await redis.client.hget(`${queue}:keys:held`, key)) ?? '').split(' ').filter(Boolean).sort();

  const commit = (
    on: RedisQueueBackend,
    batch: ClaimedBatch,
    records: readonly ClaimedRecord[],
  ): Promise<void> => services.commit(on, batch, records);

  async function done(on: RedisQueueBackend, batch: ClaimedBatch): Promise<void> {
    await commit(on, batch, batch.records);
    await on.complete(batch, []);
  }

  describe('key_concurrency = 2', () => {
    it('lets two claims hold one key; a third gets none until one completes or gives back', async () => {
      const { queue, consumer } = fresh(TWO);
      await publish(queue, 'K', names(12));
      const first = await a().claim(queue, consumer('A'), 3);
      const second = await b().claim(queue, consumer('B'), 3);
      expect(payloads(first)).toEqual(['r0', 'r1', 'r2']);
      expect(payloads(second)).toEqual(['r3', 'r4', 'r5']);
      expect(await holders(queue, 'K')).toEqual([first!.id, second!.id].sort());
      expect(await c().claim(queue, consumer('C'), 3)).toBeUndefined();

      await done(a(), first!);
      const third = await waitFor(
        async () => (await c().claim(queue, consumer('C'), 3)) ?? undefined,
        10_000,
        'a claim once the first batch completed',
      );
      expect(payloads(third)).toEqual(['r6', 'r7', 'r8']);
      expect(await a().claim(queue, consumer('A'), 3)).toBeUndefined();

      // A batch given back lets go of the key: its records are first in line again.
      await b().release(second!, second!.records);
      const again = await a().claim(queue, consumer('A'), 3);
      expect(tries(again)).toEqual([
        ['r3', 0],
        ['r4', 0],
        ['r5', 0],
      ]);
      expect(await holders(queue, 'K')).toEqual([third.id, again!.id].sort());
      await done(c(), third);
      await done(a(), again!);
      const last = await waitFor(
        async () => (await b().claim(queue, consumer('B'), 10)) ?? undefined,
        10_000,
        'the last records',
      );
      expect(payloads(last)).toEqual(['r9', 'r10', 'r11']);
      await done(b(), last);
      await waitFor(
        async () => ((await holders(queue, 'K')).length === 0 ? true : undefined),
        10_000,
        'the last batch to let go of the key',
      );
      expect(await a().stats(queue)).toMatchObject({ depth: 0, inFlight: 0 });
    });

    it('retries a failed record without holding its key back; it counts against the key when it runs again', async () => {
      const { queue, consumer } = fresh(TWO);
      await publish(queue, 'K', names(8));
      const first = await a().claim(queue, consumer('A'), 2);
      const [r0, r1] = first!.records as [ClaimedRecord, ClaimedRecord];
      await commit(a(), first!, [r1]);
      const retryAt = new Date(Date.now() + 1000);
      await a().complete(first!, [{ record: r0, error: 'boom', retryAt }]);
      expect(await a().stats(queue)).toMatchObject({ depth: 7, delayed: 1 });

      // The key goes on without r0.
      const second = await b().claim(queue, consumer('B'), 2);
      const third = await c().claim(queue, consumer('C'), 2);
      expect(payloads(second)).toEqual(['r2', 'r3']);
      expect(payloads(third)).toEqual(['r4', 'r5']);
      // Once due, r0 is back at the head of its key, but two batches hold the key: it waits for one.
      await waitFor(
        async () => {
          expect(await a().claim(queue, consumer('A'), 2)).toBeUndefined();
          const head = await redis.client.lindex(`${queue}:key:K`, -1);
          return head?.endsWith(':r0') ? true : undefined;
        },
        10_000,
        'r0 back in its key',
      );
      expect(Date.now()).toBeGreaterThanOrEqual(retryAt.getTime() - 50);

      // A record sent to the error queue lets go of its batch's hold too.
      const [r2, r3] = second!.records as [ClaimedRecord, ClaimedRecord];
      await commit(b(), second!, [r3]);
      await b().complete(second!, [{ record: r2, error: 'no more attempts', retryAt: undefined }]);
      const retried = await a().claim(queue, consumer('A'), 2);
      expect(tries(retried)).toEqual([
        ['r0', 1],
        ['r6', 0],
      ]);
      expect(await holders(queue, 'K')).toEqual([third!.id, retried!.id].sort());
      expect((await a().listErrors(queue, { limit: 10 })).map((record) => record.payload.toString())).toEqual(
        ['r2'],
      );
    });

    it('puts a key held by one batch back in line when records arrive for it, raw ones keyed too', async () => {
      const keyOf = (record: Buffer): string => record.toString().split(':')[0]!;
      const { queue, consumer } = fresh({ ...TWO, keyOf });
      await publish(queue, 'K', ['K:0', 'K:1']);
      const first = await a().claim(queue, consumer('A'), 10);
      expect(payloads(first)).toEqual(['K:0', 'K:1']);
      expect(await b().claim(queue, consumer('B'), 10)).toBeUndefined();
      await publish(queue, 'K', ['K:2']);
      expect(payloads(await b().claim(queue, consumer('B'), 10))).toEqual(['K:2']);
      // Two batches hold K: a raw record keyed to it waits for one of them.
      await redis.client.lpush(queue, 'K:3');
      expect(await c().claim(queue, consumer('C'), 10)).toBeUndefined();
      expect(await redis.client.lrange(`${queue}:key:K`, 0, -1)).toEqual(['0::K:3']);
      await done(a(), first!);
      const third = await waitFor(
        async () => (await c().claim(queue, consumer('C'), 10)) ?? undefined,
        10_000,
        'the raw record once the first batch completed',
      );
      expect(payloads(third)).toEqual(['K:3']);
    });

    it('drops the hold of a batch that is gone (settled without its keys) in the recovery pass', async () => {
      const { queue, consumer } = fresh(TWO);
      const [one, two] = [consumer('A'), consumer('B')];
      await a().registerConsumer(one, 'node-a');
      await b().registerConsumer(two, 'node-b');
      try {
        await publish(queue, 'K', names(6));
        const kept = await a().claim(queue, one, 2);
        const lost = await b().claim(queue, two, 2);
        expect(await c().claim(queue, consumer('C'), 2)).toBeUndefined();
        // As a script that did not know the queue was ordered would settle it: the batch goes, its hold stays.
        await redis.client.hdel(`${queue}:batches`, lost!.id);
        await redis.client.del(`${queue}:processing:${two}:${lost!.id}`);
        expect(await holders(queue, 'K')).toEqual([kept!.id, lost!.id].sort());

        await c().recoverClaims(queue, { maxAttempts: 5 });
        expect(await holders(queue, 'K')).toEqual([kept!.id]);
        expect(payloads(await c().claim(queue, consumer('C'), 2))).toEqual(['r4', 'r5']);
      } finally {
        await a().unregisterConsumer(one);
        await b().unregisterConsumer(two);
      }
    });

    it("lets go of a dead consumer's hold when its batch is recovered", async () => {
      const { queue, consumer } = fresh(TWO);
      const alive = consumer('B');
      await b().registerConsumer(alive, 'node-b');
      try {
        await publish(queue, 'K', names(6));
        // Consumer A was never registered: it is as dead as a crashed node.
        const stale = await a().claim(queue, consumer('A'), 2);
        const held = await b().claim(queue, alive, 2);
        expect(payloads(stale)).toEqual(['r0', 'r1']);
        expect(payloads(held)).toEqual(['r2', 'r3']);
        expect(await c().claim(queue, consumer('C'), 2)).toBeUndefined();

        expect(await c().recoverClaims(queue, { maxAttempts: 5 })).toBe(2);
        expect(await holders(queue, 'K')).toEqual([held!.id]);
        const again = await c().claim(queue, consumer('C'), 3);
        expect(tries(again)).toEqual([
          ['r0', 1],
          ['r1', 1],
          ['r4', 0],
        ]);
        expect(await holders(queue, 'K')).toEqual([held!.id, again!.id].sort());
      } finally {
        await b().unregisterConsumer(alive);
      }
    });
  });

  describe('key_rate_limit', () => {
    it("runs a key's records at its rate while other keys go on", async () => {
      const rate = 5;
      const { queue, consumer } = fresh({ ordering: 'key', dedupWindowMs: 60_000, keyRateLimit: rate });
      await publish(queue, 'K', names(50));
      const started = Date.now();
      const first = await a().claim(queue, consumer('A'), 20);
      expect(payloads(first)).toEqual(names(5));
      await done(a(), first!);
      await publish(queue, 'J', ['j0', 'j1']);
      const second = await a().claim(queue, consumer('A'), 20);
      // GCRA: past the first second's worth, one record per 1/rate s (none, unless this machine stalled).
      const allowed = Math.floor(((Date.now() - started) * rate) / 1000);
      const ofK = payloads(second).filter((payload) => payload.startsWith('r'));
      expect(ofK.length).toBeLessThanOrEqual(allowed);
      expect(payloads(second).filter((payload) => payload.startsWith('j'))).toEqual(['j0', 'j1']);
      await done(a(), second!);

      const claimed = [...names(5), ...ofK];
      let round = 0;
      await waitFor(
        async () => {
          const index = round++ % 3;
          const batch = await backends[index]!.claim(queue, consumer(`B${index}`), 20);
          if (batch) {
            claimed.push(...payloads(batch));
            await done(backends[index]!, batch);
          }
          // At most a burst of one second's worth, then the rate (one record of slack for rounding).
          expect(claimed.length).toBeLessThanOrEqual(rate + 1 + ((Date.now() - started) * rate) / 1000);
          return claimed.length >= 15 ? true : undefined;
        },
        30_000,
        'ten more records of K',
      );
      expect(claimed).toEqual(names(claimed.length));
      expect(Date.now() - started).toBeGreaterThanOrEqual(((claimed.length - rate - 1) * 1000) / rate);
    });

    it('shares one rate per key between the batches that hold it at once (key_concurrency = 2)', async () => {
      const { queue, consumer } = fresh({ ...TWO, keyRateLimit: 5 });
      await publish(queue, 'K', names(20));
      const started = Date.now();
      const first = await a().claim(queue, consumer('A'), 3);
      const second = await b().claim(queue, consumer('B'), 10);
      const allowed = 5 + Math.floor(((Date.now() - started) * 5) / 1000);
      expect(payloads(first)).toEqual(names(3));
      expect(payloads(second).length).toBeGreaterThanOrEqual(2);
      expect(payloads(second).length).toBeLessThanOrEqual(allowed - 3);
      expect(payloads(second)).toEqual(names(payloads(second).length, 3));
    });
  });
});
