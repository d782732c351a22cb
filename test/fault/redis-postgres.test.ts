// Faults on Redis queues into a PostgreSQL sink, on private servers: 50k records pushed by a raw producer
// (as Azafea's does) while the node is killed with kill -9, or Redis or PostgreSQL restarts. At the end
// every record is in the sink exactly once; a record that always fails ends in errors-<queue>.
import { join } from 'node:path';

import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';

import { countSeen } from '../support/postgres.js';

import type { PrivatePostgres, PrivateRedis } from '../support/private-services.js';
import { startPrivatePostgres, startPrivateRedis } from '../support/private-services.js';
import type { BatonNodeProcess } from '../support/process.js';
import { cleanupAll, FIXTURES_DIR, freePort, startBatonNode, tempProject } from '../support/process.js';

const RECORDS = 50_000;
/**
 * 300 ms per batch of 500, two batches at a time: the records need about 15 s of a running node, while the
 * faults leave it running far less than that, however fast or loaded the machine is.
 */
const SLOW = { IDS_BATCH_DELAY_MS: '300' };
const disposers: Array<() => Promise<void>> = [];

afterEach(async () => {
  await cleanupAll();
  for (const dispose of disposers.splice(0).reverse()) await dispose().catch(() => undefined);
});

interface Setup {
  postgres: PrivatePostgres;
  redis: PrivateRedis;
  configPath: string;
  count(): Promise<{ rows: number; distinct: number }>;
  push(payloads: readonly string[]): Promise<void>;
  /** Pushes records 0…RECORDS-1 at a steady rate over about `durationMs`, as a live producer would. */
  produce(durationMs: number): Promise<void>;
}

async function setup(maxAttempts = 20): Promise<Setup> {
  const postgres = await startPrivatePostgres();
  disposers.push(() => postgres.dispose());
  const redis = await startPrivateRedis();
  disposers.push(() => redis.dispose());
  const project = await tempProject({
    toml:
      `[node]\nname = "fault"\ndata_dir = "data"\nshutdown_timeout_ms = 5000\n[log]\nlevel = "warn"\n` +
      `[http]\nport = ${await freePort()}\n[store]\nurl = "${postgres.url}"\npool_size = 3\n` +
      `[redis]\nurl = "${redis.url}"\n` +
      `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\nbackend = "redis"\nkey = "metrics-ids"\n` +
      `batch_size = 500\nconcurrency = 2\nmax_attempts = ${maxAttempts}\nretry_delay_ms = 100\nretry_max_delay_ms = 200\n`,
  });
  const count = (): Promise<{ rows: number; distinct: number }> => countSeen(postgres.url);
  const push = async (payloads: readonly string[]): Promise<void> => {
    const producer = new Redis(redis.url);
    try {
      for (let start = 0; start < payloads.length; start += 1000) {
        await producer.lpush('metrics-ids', ...payloads.slice(start, start + 1000));
      }
    } finally {
      producer.disconnect();
    }
  };
  const produce = async (durationMs: number): Promise<void> => {
    const producer = new Redis(redis.url, { retryStrategy: () => 100, maxRetriesPerRequest: null });
    const chunk = 500;
    const pause = durationMs / (RECORDS / chunk);
    try {
      for (let start = 0; start < RECORDS; start += chunk) {
        // Through a Redis restart the command waits in ioredis's offline queue and is sent on reconnect; a
        // command that ran but lost its reply is sent again. The marker makes that resend a no-op, so the
        // producer itself never pushes a record twice (only then can duplicates be blamed on the consumer).
        await producer.eval(
          "if redis.call('SETNX', KEYS[2], 1) == 1 then return redis.call('LPUSH', KEYS[1], unpack(ARGV)) end return 0",
          2,
          'metrics-ids',
          `produced:${start}`,
          ...ids(start, Math.min(RECORDS, start + chunk)),
        );
        await sleep(pause);
      }
    } finally {
      producer.disconnect();
    }
  };
  return { postgres, redis, configPath: project.configPath, count, push, produce };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const ids = (from: number, to: number): string[] =>
  Array.from({ length: to - from }, (_, index) => JSON.stringify({ id: from + index }));

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe('Redis queues into PostgreSQL, under faults', () => {
  it('kill -9 of the node five times at random moments: 50k records, each stored exactly once', async () => {
    const s = await setup();
    let node: BatonNodeProcess = await startBatonNode(s.configPath, { env: SLOW });
    const producing = s.produce(3_000);
    const atKills: number[] = [];
    for (let kill = 0; kill < 5; kill++) {
      await sleep(500 + Math.random() * 1000);
      await node.stop('SIGKILL');
      atKills.push((await s.count()).rows);
      node = await startBatonNode(s.configPath, { env: SLOW });
    }
    await producing;
    // Each kill came while records were still arriving: none of them found the work already done.
    expect(atKills.every((rows) => rows < RECORDS)).toBe(true);
    await waitUntil(async () => (await s.count()).rows >= RECORDS, 90_000, 'every record');
    await sleep(4000); // recovered batches of the killed nodes would show as duplicates by now
    expect(await s.count()).toEqual({ rows: RECORDS, distinct: RECORDS });
    expect((await node.stop()).code).toBe(0);
  }, 150_000);

  it.each(['redis', 'postgres'] as const)(
    'a %s restart in the middle: the node stays up and stores every record exactly once',
    async (server) => {
      const s = await setup();
      const node = await startBatonNode(s.configPath, { env: SLOW });
      const producing = s.produce(3_000);
      await waitUntil(async () => (await s.count()).rows >= RECORDS / 5, 60_000, 'a fifth of the records');
      const atFault = (await s.count()).rows;
      await s[server].restart();
      await producing;
      expect(atFault).toBeLessThan(RECORDS);
      await waitUntil(async () => (await s.count()).rows >= RECORDS, 90_000, 'every record');
      await sleep(2000);
      expect(await s.count()).toEqual({ rows: RECORDS, distinct: RECORDS });
      expect(node.process.exitCode).toBeNull();
      expect((await node.stop()).code).toBe(0);
    },
    150_000,
  );

  it('a record that always fails reaches errors-<queue> after max_attempts and does not block the queue', async () => {
    const s = await setup(3);
    await s.push([...ids(0, 1000), 'not json', ...ids(1000, 2000)]);
    const node = await startBatonNode(s.configPath);
    await waitUntil(async () => (await s.count()).rows >= 2000, 60_000, 'the good records');
    const redis = new Redis(s.redis.url);
    try {
      await waitUntil(async () => (await redis.llen('errors-ids')) === 1, 30_000, 'the error queue');
      expect((await redis.lrange('errors-ids', 0, -1)).map(String)).toEqual(['not json']);
      const listed = await fetch(`${node.url}/v1/queues/ids/errors`).then(
        (r) => r.json() as Promise<{ errors: Array<{ attempts: number; error: string }> }>,
      );
      expect(listed.errors[0]?.attempts).toBe(3);
      expect(listed.errors[0]?.error).toMatch(/JSON/);
    } finally {
      redis.disconnect();
    }
    expect(await s.count()).toEqual({ rows: 2000, distinct: 2000 });
    await node.stop();
  }, 120_000);
});
