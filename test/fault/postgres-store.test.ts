// Faults on the PostgreSQL store with store-backed queues, on a private server: a server restart and
// repeated kill -9 of the node lose nothing and apply nothing twice, and the node never exits.
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { countSeen } from '../support/postgres.js';

import type { PrivatePostgres } from '../support/private-services.js';
import { startPrivatePostgres } from '../support/private-services.js';
import type { BatonNodeProcess } from '../support/process.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

const RECORDS = 20_000;
/**
 * 150 ms per batch of 100 records, two batches at a time: the records need about 15 s of a running node,
 * while the faults below leave it running far less than that, on a fast machine or a loaded one.
 */
const SLOW = { IDS_BATCH_DELAY_MS: '150' };
let server: PrivatePostgres | undefined;

afterEach(async () => {
  await cleanupAll();
  await server?.dispose();
  server = undefined;
});

async function setup() {
  server = await startPrivatePostgres();
  const port = await freePort();
  const project = await tempProject({
    toml:
      `[node]\nname = "fault"\ndata_dir = "data"\nshutdown_timeout_ms = 5000\n[log]\nlevel = "warn"\n` +
      `[http]\nport = ${port}\n[store]\nurl = "${server.url}"\npool_size = 3\n` +
      `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\nbatch_size = 100\nconcurrency = 2\nmax_attempts = 20\n`,
  });
  const input = Array.from({ length: RECORDS }, (_, id) => JSON.stringify({ id })).join('\n');
  const published = await runBaton(['-c', project.configPath, 'publish', 'ids', '-'], {
    input,
    timeoutMs: 60_000,
  });
  expect(published.stdout).toContain(`accepted ${RECORDS} records`);
  const count = (): Promise<{ rows: number; distinct: number }> => countSeen(server?.url ?? '');
  return { project, count };
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe('PostgreSQL store faults', () => {
  it('a server restart in the middle: the node stays up, reports not ready, then finishes exactly once', async () => {
    const { project, count } = await setup();
    const node = await startBatonNode(project.configPath, { env: SLOW });
    await waitUntil(async () => (await count()).rows >= RECORDS / 5, 60_000, 'a fifth of the records');
    expect((await count()).rows).toBeLessThan(RECORDS);
    let sawNotReady = false;
    const probing = (async () => {
      for (let i = 0; i < 100 && !sawNotReady; i++) {
        const status = await fetch(`${node.url}/readyz`).then(
          (r) => r.status,
          () => 0,
        );
        if (status === 503) sawNotReady = true;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    await server?.stop();
    await probing;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await server?.start();
    const resumed = Date.now();
    await waitUntil(async () => (await count()).rows >= RECORDS, 90_000, 'every record').catch(
      (error: unknown) => {
        throw new Error(`${String(error)}\n--- node stderr\n${node.stderr.slice(-3000)}`);
      },
    );
    console.log(`finished ${Date.now() - resumed} ms after the server came back`);
    expect(await count()).toEqual({ rows: RECORDS, distinct: RECORDS });
    expect(sawNotReady).toBe(true);
    expect(node.process.exitCode).toBeNull();
    expect(node.stderr).toMatch(/unreachable/);
    expect((await node.stop()).code).toBe(0);
  }, 150_000);

  it('kill -9 of the node five times at random moments: every record stored exactly once', async () => {
    const { project, count } = await setup();
    let node: BatonNodeProcess = await startBatonNode(project.configPath, { env: SLOW });
    const atKills: number[] = [];
    for (let kill = 0; kill < 5; kill++) {
      await new Promise((resolve) => setTimeout(resolve, 300 + Math.random() * 700));
      await node.stop('SIGKILL');
      atKills.push((await count()).rows);
      node = await startBatonNode(project.configPath, { env: SLOW });
    }
    // Each kill came while records were still pending.
    expect(atKills.every((rows) => rows < RECORDS)).toBe(true);
    // The records that killed nodes held are recovered as orphans, and each runs alone (it may be what killed
    // its node), so each costs a batch's 150 ms: up to 400 per killed node (two batches running, two claimed
    // ahead), so up to 150 s at two batches at a time, on top of the 15 s of the rest.
    await waitUntil(async () => (await count()).rows >= RECORDS, 300_000, 'every record').catch(
      async (error: unknown) => {
        const listing = await runBaton(['-c', project.configPath, 'queues', '--json']);
        throw new Error(
          `${String(error)} (${JSON.stringify(await count())})\n--- queues\n${listing.stdout}${listing.stderr}\n--- node stderr\n${node.stderr.slice(-3000)}`,
        );
      },
    );
    // Claims of the killed nodes are recovered after CONSUMER_TIMEOUT_MS; give stragglers a moment to show.
    await new Promise((resolve) => setTimeout(resolve, 4000));
    expect(await count()).toEqual({ rows: RECORDS, distinct: RECORDS });
    const listing = await runBaton(['-c', project.configPath, 'queues', '--json']);
    expect(listing.stderr).toBe('');
    const queues = JSON.parse(listing.stdout) as {
      queues: Array<{ depth: number; in_flight: number; errors: number }>;
    };
    expect(queues.queues[0]).toMatchObject({ depth: 0, in_flight: 0, errors: 0 });
    expect((await node.stop()).code).toBe(0);
  }, 420_000);
});
