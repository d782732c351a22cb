// Readiness after the store lost Baton's schema under a running node: a PostgreSQL database dropped and
// created again answers pings, but every ingest fails. /readyz answers 503 with the reason; the node does
// not re-create the schema by itself; `baton migrate` does, and the node is ready and ingests again.
import { join } from 'node:path';

import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { dropTrackedDatabases, SERVER_URL, storeToml } from '../support/postgres.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

const WAIT = { timeout: 60_000, interval: 250 };

afterEach(async () => {
  await cleanupAll();
  await dropTrackedDatabases();
});

interface ReadyzReply {
  status: string;
  state: string;
  reason?: string;
}

async function readyz(url: string): Promise<{ status: number; reply: ReadyzReply }> {
  const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(10_000) });
  return { status: response.status, reply: (await response.json()) as ReadyzReply };
}

async function onServer(statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: SERVER_URL, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

const publish = (url: string, id: number) =>
  fetch(`${url}/v1/queues/ids/records`, {
    method: 'POST',
    body: JSON.stringify({ id }),
    signal: AbortSignal.timeout(30_000),
  });

describe('a PostgreSQL store re-created empty under a running node', () => {
  it('makes /readyz answer 503 with the reason until `baton migrate`, then 200 and ingest works', async () => {
    const storeTable = await storeToml('postgres');
    const database = /url = "postgres:\/\/[^/]+\/(\w+)"/.exec(storeTable)?.[1];
    expect(database).toMatch(/^baton_t_/);
    const project = await tempProject({
      toml:
        `[node]\ndata_dir = "data"\n[log]\nlevel = "error"\n[http]\nport = ${await freePort()}\n${storeTable}` +
        `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\n`,
    });
    const node = await startBatonNode(project.configPath);
    expect((await readyz(node.url)).status).toBe(200);
    expect((await publish(node.url, 1)).status).toBe(202);

    await onServer(`DROP DATABASE ${database} WITH (FORCE)`);
    await onServer(`CREATE DATABASE ${database}`);

    const notReady = await vi.waitFor(async () => {
      const answer = await readyz(node.url);
      expect(answer.status).toBe(503);
      return answer.reply;
    }, WAIT);
    expect(notReady.reason).toContain('baton_migrations');
    expect(notReady.reason).toContain('baton migrate');
    expect((await publish(node.url, 2)).status).not.toBe(202); // refused: the store has no queue tables
    // The node leaves the schema to the operator: it stays not ready.
    for (let probe = 0; probe < 3; probe++) expect((await readyz(node.url)).status).toBe(503);

    const migrated = await runBaton(['-c', project.configPath, 'migrate'], {
      cwd: project.dir,
      timeoutMs: 60_000,
    });
    expect(migrated.code, migrated.stderr).toBe(0);
    await vi.waitFor(async () => expect((await readyz(node.url)).status).toBe(200), WAIT);
    await vi.waitFor(async () => expect((await publish(node.url, 3)).status).toBe(202), WAIT);
    // On a PostgreSQL store the record is queued, then processed by the node's runner.
    await vi.waitFor(async () => {
      const seen = await runBaton(['-c', project.configPath, 'sql', 'SELECT id FROM seen ORDER BY id'], {
        cwd: project.dir,
      });
      expect(seen.stdout.trim().split('\n')).toContain('3');
    }, WAIT);
    expect((await node.stop()).code).toBe(0);
  }, 240_000);
});
