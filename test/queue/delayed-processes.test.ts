// Delayed records through the command line and across a crash: `baton publish --delay/--at`, with no node
// running (the command opens the embedded store itself) and through a running node; the node is then killed
// with SIGKILL while the records wait, and started again. Every record runs once, never before its time, on
// the store queue and on a Redis queue. Bad flags fail the command with a message naming them.
import { fileURLToPath } from 'node:url';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import type { TempProject } from '../support/process.js';
import {
  cleanupAll,
  freePort,
  runBaton,
  sqlOverHttp,
  startBatonNode,
  tempProject,
} from '../support/process.js';
import type { TestRedis } from '../support/redis.js';
import { openTestRedis } from '../support/redis.js';

const HANDLER = fileURLToPath(new URL('../fixtures/delayed-handler.ts', import.meta.url));

let redis: TestRedis;
beforeAll(async () => {
  redis = await openTestRedis();
});
afterAll(async () => {
  await redis?.cleanup();
});
afterEach(cleanupAll);

async function project(): Promise<TempProject> {
  return tempProject({
    toml: {
      node: { name: 'delayed-process', data_dir: 'data' },
      http: { port: await freePort() },
      redis: { url: redis.url },
      queues: {
        s: { handler: HANDLER },
        r: { handler: HANDLER, backend: 'redis', key: redis.queue() },
      },
    },
  });
}

async function publish(config: string, args: readonly string[]): Promise<void> {
  const result = await runBaton(['-c', config, 'publish', ...args]);
  if (result.code !== 0) throw new Error(`publish ${args.join(' ')} failed:\n${result.stderr}`);
}

describe('baton publish --delay / --at', () => {
  it('records wait for their time across a node killed with SIGKILL, then run once each', async () => {
    const { configPath } = await project();
    // No node yet: the command opens the embedded store itself (and Redis for the Redis queue).
    const started = Date.now();
    await publish(configPath, ['s', 'cold', '--delay', '8s']);
    await publish(configPath, ['r', 'cold-red', '--delay', '8s']);
    let node = await startBatonNode(configPath);
    // Through the running node (its HTTP API).
    const sent = Date.now();
    const at = new Date(sent + 9_000);
    await publish(configPath, ['s', 'warm', '--delay', '8s']);
    await publish(configPath, ['r', 'warm-red', '--delay', '8s']);
    await publish(configPath, ['s', 'timed', '--at', at.toISOString()]);
    // The node is killed while these wait (their time is seconds away).
    expect(Date.now()).toBeLessThan(sent + 8_000);
    const ran = await sqlOverHttp(
      node.url,
      `SELECT count(*)::int AS n FROM delayed_runs
       WHERE payload IN (encode('warm', 'hex'), encode('warm-red', 'hex'), encode('timed', 'hex'))`,
    );
    expect(ran[0]?.['n']).toBe(0);
    await node.stop('SIGKILL');

    node = await startBatonNode(configPath);
    const notBefore: Record<string, number> = {
      cold: started + 8_000,
      'cold-red': started + 8_000,
      warm: sent + 8_000,
      'warm-red': sent + 8_000,
      timed: at.getTime(),
    };
    const runs = async () =>
      sqlOverHttp(
        node.url,
        `SELECT convert_from(decode(payload, 'hex'), 'UTF8') AS record, ran_ms::text AS ran_ms,
                (extract(epoch FROM ran_at) * 1000)::float8 AS ran_at_ms
         FROM delayed_runs ORDER BY id`,
      );
    await expect.poll(async () => (await runs()).length, { timeout: 60_000, interval: 200 }).toBe(5);
    const rows = await runs();
    expect(rows.map((row) => row['record']).sort()).toEqual(Object.keys(notBefore).sort());
    for (const row of rows) {
      const earliest = notBefore[String(row['record'])] ?? Infinity;
      expect(Number(row['ran_ms'])).toBeGreaterThanOrEqual(earliest);
      expect(Number(row['ran_at_ms'])).toBeGreaterThanOrEqual(earliest);
    }
    // Nothing left, nothing doubled a moment later.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await runs()).toHaveLength(5);
    const queues = await runBaton(['-c', configPath, 'queues', '--json']);
    const listed = JSON.parse(queues.stdout) as { queues: Array<Record<string, unknown>> };
    expect(listed.queues.map((queue) => [queue['name'], queue['depth'], queue['delayed']])).toEqual([
      ['s', 0, 0],
      ['r', 0, 0],
    ]);
  }, 120_000);

  it('shows delayed records in `baton queues`, and refuses bad flags naming them', async () => {
    const { configPath } = await project();
    await publish(configPath, ['s', 'far', '--delay', '1h']);
    await publish(configPath, ['r', 'far-red', '--at', new Date(Date.now() + 3_600_000).toISOString()]);
    const table = await runBaton(['-c', configPath, 'queues']);
    expect(table.code).toBe(0);
    const header = table.stdout.split('\n')[0] ?? '';
    expect(header).toMatch(/depth\s+delayed\s+in flight/);
    for (const name of ['s', 'r']) {
      const line = table.stdout.split('\n').find((text) => text.startsWith(`${name} `)) ?? '';
      // depth 1, delayed 1.
      expect(line).toMatch(/^\S+\s+\S+\s+1\s+1\s+0\b/);
    }
    const json = JSON.parse((await runBaton(['-c', configPath, 'queues', '--json'])).stdout) as {
      queues: Array<Record<string, unknown>>;
    };
    expect(json.queues[0]).toMatchObject({ name: 's', depth: 1, delayed: 1, delayed_capped: false });

    const bad: Array<[string[], RegExp]> = [
      [['s', 'x', '--delay', '5x'], /--delay: expected a duration/],
      [['s', 'x', '--delay', '1s', '--at', '2030-01-01T00:00:00Z'], /--delay or --at, not both/],
      [['s', 'x', '--at', 'noon'], /--at: expected an ISO 8601 time/],
      [['s', 'x', '--delay', '366d'], /--delay: at most 365 days/],
    ];
    for (const [args, message] of bad) {
      const result = await runBaton(['-c', configPath, 'publish', ...args]);
      expect(result.code).not.toBe(0);
      expect(result.stderr).toMatch(message);
    }
    const after = JSON.parse((await runBaton(['-c', configPath, 'queues', '--json'])).stdout) as {
      queues: Array<Record<string, unknown>>;
    };
    expect(after.queues[0]).toMatchObject({ name: 's', depth: 1 });
  }, 120_000);
});
