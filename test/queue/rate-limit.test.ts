// Rate limits across nodes: two nodes consume a store queue and a Redis queue limited to 20 records per
// second; however many consumers claim, the records run no faster than the rate (after a first second's
// burst), and each runs once. The limiters themselves: a second's worth at once, then none until time passes,
// and what a claim did not use is given back.
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createLogger } from '../../src/log.js';
import type { RateLimiter } from '../../src/queue/rate-limit.js';
import { RedisQueueBackend } from '../../src/queue/redis.js';
import type { NodeGroup } from '../support/node-group.js';
import { startNodeGroup } from '../support/node-group.js';
import type { TestRedis } from '../support/redis.js';
import { openTestRedis } from '../support/redis.js';
import type { StoreSubject } from '../support/store-subjects.js';
import { STORE_SUBJECTS } from '../support/store-subjects.js';
import { waitFor } from '../tasks/support.js';

const HANDLER = fileURLToPath(new URL('../fixtures/rated-handler.ts', import.meta.url));
const RATE = 20;
const RECORDS = 100;

describe('the rate limiters', () => {
  let subject: StoreSubject;
  let redis: TestRedis;
  let redisBackend: RedisQueueBackend;
  beforeAll(async () => {
    subject = await (STORE_SUBJECTS['postgres'] as () => Promise<StoreSubject>)();
    redis = await openTestRedis();
    redisBackend = new RedisQueueBackend({
      url: redis.url,
      store: subject.store,
      log: createLogger({ level: 'silent' }),
      keys: {},
    });
    await redisBackend.start({ checkPersistence: false });
  }, 60_000);
  afterAll(async () => {
    await redisBackend?.close();
    await redis?.cleanup();
    await subject?.dispose();
  });

  const limiters: Array<[string, () => RateLimiter, () => string]> = [
    ['store', () => subject.backend.rates, () => `limited-${++named}`],
    ['redis', () => redisBackend.rates, () => redis.queue()],
  ];
  let named = 0;

  it.each(limiters)(
    '%s: grants a second’s worth, then none until time passes; unused grants come back',
    async (_, limiter, queueName) => {
      const rates = limiter();
      const [limited, other] = [queueName(), queueName()];
      expect(await rates.reserve(limited, 100, 10)).toEqual({ granted: 10, waitMs: 0 });
      const refused = await rates.reserve(limited, 100, 10);
      expect(refused.granted).toBe(0);
      expect(refused.waitMs).toBeGreaterThan(0);
      expect(refused.waitMs).toBeLessThanOrEqual(100);
      await rates.refund(limited, 4, 10);
      expect((await rates.reserve(limited, 100, 10)).granted).toBe(4);
      // Other queues have rates of their own.
      expect((await rates.reserve(other, 3, 10)).granted).toBe(3);
    },
  );

  it.each(limiters)(
    '%s: a rate below one per second lets one record through, then waits its interval',
    async (_, limiter, queueName) => {
      const rates = limiter();
      const queue = queueName();
      expect(await rates.reserve(queue, 10, 0.25)).toEqual({ granted: 1, waitMs: 0 });
      const refused = await rates.reserve(queue, 10, 0.25);
      expect(refused.granted).toBe(0);
      expect(refused.waitMs).toBeGreaterThan(3000);
      expect(refused.waitMs).toBeLessThanOrEqual(4000);
    },
  );
});

describe('rate_limit on two nodes', () => {
  let group: NodeGroup;

  beforeAll(async () => {
    const limited = { handler: HANDLER, rate_limit: RATE, batch_size: 50, concurrency: 4 };
    group = await startNodeGroup(['rate-a', 'rate-b'], (list) => ({
      stored: limited,
      pushed: { ...limited, backend: 'redis', key: list() },
    }));
  }, 120_000);

  afterAll(async () => {
    await group?.close();
  });

  it.each(['stored', 'pushed'])(
    'queue %s runs no faster than its rate, each record once',
    async (queue) => {
      const records = Array.from({ length: RECORDS }, (_, index) => Buffer.from(`${queue}-${index}`));
      // No claim takes a record before its publish: the rate counts from here (the database's clock).
      const publishedMs = await group.databaseNow();
      await group.nodes[0]?.publish(queue, records);
      let rows: Array<{ record: string; ms: number }> = [];
      await waitFor(
        async () => {
          ({ rows } = await group.client.query(
            `SELECT record, extract(epoch FROM ran_at) * 1000 AS ms FROM rated WHERE queue = $1 ORDER BY ran_at`,
            [queue],
          ));
          return rows.length >= RECORDS;
        },
        120_000,
        `the ${RECORDS} records of ${queue} run`,
      );
      expect(new Set(rows.map((row) => row.record)).size).toBe(RECORDS);
      expect(rows.length).toBe(RECORDS);
      // A second's burst, then RATE per second: by t seconds after the publish at most RATE × (1 + t) records
      // were granted, so the last cannot run before (RECORDS - RATE) / RATE s after it (less one step of
      // rounding); a slow machine only makes it later. Two nodes with four consumers each share that rate.
      const lastMs = Number(rows.at(-1)?.ms) - publishedMs;
      expect(lastMs).toBeGreaterThanOrEqual(((RECORDS - RATE) / RATE) * 1000 - 1000 / RATE);
    },
    180_000,
  );
});
