// key_concurrency across node processes killed with kill -9: two nodes consume a store queue and a Redis
// queue whose keys may each run two batches at once. A node is killed while it holds batches of both
// queues, and started again. The dead node's batches held their keys: once they are recovered, the keys
// are free again, so every record runs (exactly once), and runs of one key never overlapped more than
// key_concurrency at a time.
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import type { SharedServices } from '../support/claims.js';
import { claimsHeld, nodeToml, openSharedServices } from '../support/claims.js';
import type { BatonNodeProcess } from '../support/process.js';
import { cleanupAll, startBatonNode, tempProject } from '../support/process.js';
import type { TimedRun } from '../support/runs.js';
import { mostAtOnce } from '../support/runs.js';
import { tomlString, waitFor } from '../tasks/support.js';

const HANDLER = fileURLToPath(new URL('../fixtures/key-limits-handler.ts', import.meta.url));
const KEY_CONCURRENCY = 2;
const KEYS = 8;
const PER_KEY = 40;
const STORE_QUEUE = 'kc';

let services: SharedServices | undefined;
afterEach(async () => {
  await cleanupAll();
  await services?.close();
  services = undefined;
});

interface Run extends TimedRun {
  queue: string;
  key: string;
  record: string;
}

interface QueueView {
  name: string;
  depth: number;
  in_flight: number;
  errors: number;
}

const range = (count: number): number[] => Array.from({ length: count }, (_, index) => index);

describe('key_concurrency across node processes killed with kill -9', () => {
  it('frees a dead node’s keys: every record runs once, never more than two batches of a key at once', async () => {
    const shared = await openSharedServices();
    services = shared;
    const { redis: testRedis, pool: query, count } = shared;

    const redisQueue = testRedis.queue();
    // Names under the Redis prefix, so that its cleanup finds every key the nodes write.
    const names = range(2).map((index) => `${testRedis.prefix}-n${index + 1}`);
    const queue = (name: string, backend: string): string =>
      `[queues.${tomlString(name)}]\nhandler = ${tomlString(HANDLER)}\nbackend = "${backend}"\n` +
      `ordering = "key"\nkey_concurrency = ${KEY_CONCURRENCY}\nbatch_size = 3\nconcurrency = 4\n`;
    const configs: string[] = [];
    for (const name of names) {
      const project = await tempProject({
        toml: (await nodeToml(shared, name)) + queue(STORE_QUEUE, 'store') + queue(redisQueue, 'redis'),
      });
      configs.push(project.configPath);
    }
    const start = (slot: number): Promise<BatonNodeProcess> =>
      startBatonNode(configs[slot] ?? '', { readyTimeoutMs: 60_000 });
    const nodes = [await start(0), await start(1)];

    // Every key's records, through the second node, before the first one is killed.
    for (const name of [STORE_QUEUE, redisQueue]) {
      for (const k of range(KEYS)) {
        const response = await fetch(`${nodes[1]?.url}/v1/queues/${name}/records`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-ndjson', 'baton-key': `k${k}` },
          body: range(PER_KEY)
            .map((seq) => `k${k}-${seq}`)
            .join('\n'),
          signal: AbortSignal.timeout(30_000),
        });
        expect(response.status, await response.text()).toBe(202);
      }
    }

    // The first node dies while it holds batches of both queues.
    const victim = nodes[0] as BatonNodeProcess;
    const consumer = `${names[0]}:${victim.pid}:`;
    const held = (): Promise<{ store: number; redis: number }> => claimsHeld(shared, consumer, redisQueue);
    await waitFor(
      async () => {
        const claims = await held();
        return claims.store > 0 && claims.redis > 0;
      },
      60_000,
      `${names[0]} holding batches of both queues`,
    );
    const exit = await victim.stop('SIGKILL');
    expect(exit.signal).toBe('SIGKILL');
    const atDeath = await held();
    expect(atDeath.store + atDeath.redis).toBeGreaterThan(0);
    nodes[0] = await start(0);

    const total = 2 * KEYS * PER_KEY;
    const queues = async (): Promise<QueueView[]> => {
      const response = await fetch(`${nodes[1]?.url}/v1/queues`, { signal: AbortSignal.timeout(10_000) });
      return ((await response.json()) as { queues: QueueView[] }).queues;
    };
    await waitFor(
      async () => (await count('SELECT count(*)::int AS n FROM key_runs')) >= total,
      120_000,
      'every record run',
    ).catch(async (error: unknown) => {
      throw new Error(`${String(error)}\nqueues: ${JSON.stringify(await queues().catch(String))}`);
    });
    await waitFor(
      async () => {
        const views = await queues().catch(() => []);
        return views.length === 2 && views.every((view) => view.depth === 0 && view.in_flight === 0);
      },
      60_000,
      'both queues empty',
    );

    const { rows } = await query.query<{
      queue: string;
      key: string;
      record: string;
      started: number;
      ended: number;
    }>(
      `SELECT queue, key, record, extract(epoch FROM started_at) * 1000 AS started,
              extract(epoch FROM ended_at) * 1000 AS ended FROM key_runs`,
    );
    const runs: Run[] = rows.map((row) => ({
      ...row,
      started: Number(row.started),
      ended: Number(row.ended),
    }));
    expect(runs).toHaveLength(total);
    for (const name of [STORE_QUEUE, redisQueue]) {
      const ofQueue = runs.filter((run) => run.queue === name);
      expect(new Set(ofQueue.map((run) => run.record)).size, `records of ${name} run once`).toBe(
        KEYS * PER_KEY,
      );
      const most = range(KEYS).map((k) => mostAtOnce(ofQueue.filter((run) => run.key === `k${k}`)));
      for (const atOnce of most) expect(atOnce, `runs of a key of ${name} at once`).toBeLessThanOrEqual(2);
      expect(Math.max(...most), `keys of ${name} ran two batches at once`).toBe(KEY_CONCURRENCY);
    }
  }, 240_000);
});
