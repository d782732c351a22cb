// A dead consumer's records are back in play within seconds: two nodes share a queue, the one holding a
// batch is killed with kill -9, and the other processes that batch. Measured for Redis and store queues.
import { join } from 'node:path';

import { Redis } from 'ioredis';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';

import { startPrivatePostgres, startPrivateRedis } from '../support/private-services.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

const disposers: Array<() => Promise<void>> = [];
afterEach(async () => {
  await cleanupAll();
  for (const dispose of disposers.splice(0).reverse()) await dispose().catch(() => undefined);
});

/** Recovery bound asserted here: the 3 s heartbeat expiry plus the 1 s recovery period, with room for a busy machine. */
const BOUND_MS = 8_000;

describe.each(['redis', 'store'] as const)('recovery of a dead consumer (%s queue)', (backend) => {
  it(`brings its records back into play within ${BOUND_MS / 1000} s`, async () => {
    const postgres = await startPrivatePostgres();
    disposers.push(() => postgres.dispose());
    const redis = await startPrivateRedis();
    disposers.push(() => redis.dispose());
    const config = async (name: string) =>
      (
        await tempProject({
          toml:
            `[node]\nname = "${name}"\ndata_dir = "data"\nshutdown_timeout_ms = 2000\n[log]\nlevel = "warn"\n` +
            `[http]\nport = ${await freePort()}\n[store]\nurl = "${postgres.url}"\n[redis]\nurl = "${redis.url}"\n` +
            `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\nbackend = "${backend}"\n` +
            `batch_size = 50\nmax_attempts = 10\n`,
        })
      ).configPath;
    const slowConfig = await config('holder');
    const fastConfig = await config('rescuer');

    // The holder claims the only batch and sits on it (its handler sleeps a minute).
    const holder = await startBatonNode(slowConfig, { env: { IDS_BATCH_DELAY_MS: '60000' } });
    const records = Array.from({ length: 50 }, (_, id) => JSON.stringify({ id }));
    if (backend === 'redis') {
      const producer = new Redis(redis.url);
      await producer.lpush('ids', ...records);
      producer.disconnect();
    } else {
      const published = await runBaton(['-c', fastConfig, 'publish', 'ids', '-'], {
        input: records.join('\n'),
      });
      expect(published.code).toBe(0);
    }
    await waitUntil(async () => (await inFlight(holder.url)) === 50, 20_000, 'the holder to claim the batch');

    const rescuer = await startBatonNode(fastConfig);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(await stored(postgres.url)).toBe(0); // the claim holds while its consumer lives
    const killedAt = Date.now();
    await holder.stop('SIGKILL');
    await waitUntil(
      async () => (await stored(postgres.url)) === 50,
      BOUND_MS + 5_000,
      'the rescuer to store the batch',
    );
    const elapsed = Date.now() - killedAt;
    console.log(`${backend}: records back in play and stored ${elapsed} ms after kill -9`);
    expect(elapsed).toBeLessThan(BOUND_MS);
    await rescuer.stop();
  }, 90_000);
});

async function inFlight(url: string): Promise<number> {
  const reply = (await fetch(`${url}/v1/queues`).then((r) => r.json())) as {
    queues: Array<{ in_flight: number }>;
  };
  return reply.queues[0]?.in_flight ?? 0;
}

async function stored(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const exists = await client.query<{ t: string | null }>("SELECT to_regclass('seen')::text AS t");
    if (!exists.rows[0]?.t) return 0;
    return Number((await client.query<{ n: string }>('SELECT count(*) AS n FROM seen')).rows[0]?.n);
  } finally {
    await client.end();
  }
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
