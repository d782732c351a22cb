// Statements that end. On a PostgreSQL store, a real lock on the queue table makes ingest wait: every request
// is answered with an error, nothing of it is stored once the lock goes (the server ended each statement),
// and the producer's resend stores each record once. The node's server connections stay within the bound
// that docs/config.md states, under the lock and under load. On the embedded store, a long statement
// through /v1/sql holds the node, as docs/http.md says, and is reported in the log.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';

import { openPgliteStore } from '../../src/store/pglite.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { BatonNodeProcess } from '../support/process.js';
import { cleanupAll, FIXTURES_DIR, freePort, startBatonNode, tempProject } from '../support/process.js';

const POOL_SIZE = 4;
/** The node gives up after 4 s; the server ends a statement after 3.2 s (a fifth below). */
const QUERY_TIMEOUT_MS = 4_000;
const NODE = 'stm';

const databases: TestDatabase[] = [];
const clients: pg.Client[] = [];

afterEach(async () => {
  await cleanupAll();
  await Promise.all(clients.splice(0).map((client) => client.end().catch(() => undefined)));
  await Promise.all(databases.splice(0).map((database) => database.drop()));
});

async function connect(url: string, applicationName: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, application_name: applicationName });
  await client.connect();
  clients.push(client);
  return client;
}

async function startNode(env: Record<string, string> = {}): Promise<{ node: BatonNodeProcess; url: string }> {
  const database = await createTestDatabase();
  databases.push(database);
  const project = await tempProject({
    toml:
      `[node]\nname = "${NODE}"\ndata_dir = "data"\nshutdown_timeout_ms = 2000\n[log]\nlevel = "info"\n` +
      `[http]\nport = ${await freePort()}\n` +
      `[store]\nurl = "${database.url}"\npool_size = ${POOL_SIZE}\nquery_timeout_ms = ${QUERY_TIMEOUT_MS}\n` +
      `[group]\nname = "g"\nelector = "postgres"\n` +
      `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\nbatch_size = 50\nconcurrency = 2\n`,
  });
  return { node: await startBatonNode(project.configPath, { env }), url: database.url };
}

/** Largest number of the node's server connections seen at once, per application_name and in all. */
interface ConnectionPeaks {
  readonly byApplication: Map<string, number>;
  total: number;
  samples: number;
}

/** Samples pg_stat_activity of the test database every 50 ms until stopped. */
function sampleConnections(watcher: pg.Client): { stop(): Promise<ConnectionPeaks> } {
  const peaks: ConnectionPeaks = { byApplication: new Map(), total: 0, samples: 0 };
  let running = true;
  const loop = (async () => {
    while (running) {
      const result = await watcher.query<{ application_name: string; n: string }>(
        `SELECT application_name, count(*) AS n FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name NOT LIKE 'test-%'
          GROUP BY application_name`,
      );
      let total = 0;
      for (const row of result.rows) {
        const count = Number(row.n);
        total += count;
        peaks.byApplication.set(
          row.application_name,
          Math.max(peaks.byApplication.get(row.application_name) ?? 0, count),
        );
      }
      peaks.total = Math.max(peaks.total, total);
      peaks.samples += 1;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peaks;
    },
  };
}

/** The bound docs/config.md states for a node on a PostgreSQL store with the postgres elector. */
function expectWithinBound(peaks: ConnectionPeaks, what: string): void {
  console.log(`server connections ${what}: at most ${peaks.total}`, Object.fromEntries(peaks.byApplication));
  const names = [...peaks.byApplication.keys()];
  expect(peaks.samples).toBeGreaterThan(5);
  expect(names.every((name) => name.startsWith(`baton:${NODE}`) || name.includes(`elector`))).toBe(true);
  expect(peaks.byApplication.get(`baton:${NODE}`) ?? 0).toBeLessThanOrEqual(POOL_SIZE);
  expect(peaks.byApplication.get(`baton:${NODE}:listen`) ?? 0).toBeLessThanOrEqual(1);
  expect(peaks.byApplication.get(`baton-elector:${NODE}`) ?? 0).toBeLessThanOrEqual(1);
  expect(peaks.byApplication.get(`baton-elector-watch:${NODE}`) ?? 0).toBeLessThanOrEqual(2);
  expect(peaks.total).toBeLessThanOrEqual(POOL_SIZE + 4);
}

async function ingest(
  nodeUrl: string,
  ids: readonly number[],
): Promise<{ status: number; body: string; retryAfter: string | null }> {
  const response = await fetch(`${nodeUrl}/v1/queues/ids/records`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-ndjson' },
    body: ids.map((id) => JSON.stringify({ id })).join('\n'),
    signal: AbortSignal.timeout(60_000),
  });
  return {
    status: response.status,
    body: await response.text(),
    retryAfter: response.headers.get('retry-after'),
  };
}

async function seenCounts(client: pg.Client): Promise<Map<number, number>> {
  const exists = await client.query<{ t: string | null }>("SELECT to_regclass('seen')::text AS t");
  if (!exists.rows[0]?.t) return new Map();
  const result = await client.query<{ id: number; n: string }>(
    'SELECT id, count(*) AS n FROM seen GROUP BY id',
  );
  return new Map(result.rows.map((row) => [row.id, Number(row.n)]));
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('statements that end, on a PostgreSQL store', () => {
  it('under a lock on the queue table: errors answered, nothing stored later, the resend stored once, connections bounded', async () => {
    const { node, url } = await startNode();
    const admin = await connect(url, 'test-admin');
    const locker = await connect(url, 'test-locker');
    const sampler = sampleConnections(await connect(url, 'test-sampler'));

    await locker.query('BEGIN');
    await locker.query('LOCK TABLE baton.baton_queue_records IN ACCESS EXCLUSIVE MODE');
    // More requests than the pool has connections, each with records of its own.
    const batches = Array.from({ length: 8 }, (_, request) => [request * 10 + 1, request * 10 + 2]);
    const answers = await Promise.all(batches.map((ids) => ingest(node.url, ids)));
    // Still locked: the node's connections, the ones ended by the server included, stay within the bound.
    await new Promise((resolve) => setTimeout(resolve, QUERY_TIMEOUT_MS));
    const underLock = await sampler.stop();
    await locker.query('COMMIT');

    for (const answer of answers) {
      expect(answer.status, answer.body).toBe(503);
      expect(JSON.parse(answer.body)).toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
      expect(answer.retryAfter).not.toBeNull();
    }
    expectWithinBound(underLock, 'under the lock');

    // A record sent after the lock went is processed; had an earlier INSERT survived, it would have
    // committed when the lock went, before this one, and been claimed first (claims go in id order).
    expect((await ingest(node.url, [100_000])).status).toBe(202);
    await waitFor(async () => (await seenCounts(admin)).has(100_000), 60_000, 'the record sent after');
    const queued = await admin.query<{ n: string }>('SELECT count(*) AS n FROM baton.baton_queue_records');
    expect(Number(queued.rows[0]?.n)).toBe(0);
    const afterLock = await seenCounts(admin);
    expect([...afterLock.keys()]).toEqual([100_000]);
    // Ended by the server, for its limit, and said so.
    expect(answers.some((answer) => answer.body.includes('ended the statement'))).toBe(true);

    // The producer resends what was answered with an error: each record is stored once.
    for (const ids of batches) expect((await ingest(node.url, ids)).status).toBe(202);
    const everyId = batches.flat();
    await waitFor(
      async () => {
        const seen = await seenCounts(admin);
        return everyId.every((id) => seen.has(id));
      },
      60_000,
      'the resent records',
    );
    const seen = await seenCounts(admin);
    expect(everyId.map((id) => seen.get(id))).toEqual(everyId.map(() => 1));
    expect(node.process.exitCode).toBeNull();
    expect((await node.stop()).code).toBe(0);
  }, 150_000);

  it('under load: the server connections stay within pool_size + 4', async () => {
    // Slow batches keep handler transactions open, so that ingest and claims compete for the pool.
    const { node, url } = await startNode({ IDS_BATCH_DELAY_MS: '30' });
    const admin = await connect(url, 'test-admin');
    const sampler = sampleConnections(await connect(url, 'test-sampler'));
    const ROUNDS = 10;
    const PARALLEL = 12;
    const PER_REQUEST = 20;
    let next = 0;
    const statuses: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const requests = Array.from({ length: PARALLEL }, () =>
        Array.from({ length: PER_REQUEST }, () => ++next),
      );
      const answers = await Promise.all(requests.map((ids) => ingest(node.url, ids)));
      statuses.push(...answers.map((answer) => answer.status));
    }
    await waitFor(
      async () => [...(await seenCounts(admin)).keys()].length >= next,
      90_000,
      'every record processed',
    );
    const peaks = await sampler.stop();
    expect(statuses.every((status) => status === 202)).toBe(true);
    expectWithinBound(peaks, 'under load');
    // The pool was used in full at some point: the bound is not met by an idle node.
    expect(peaks.byApplication.get(`baton:${NODE}`)).toBe(POOL_SIZE);
    const seen = await seenCounts(admin);
    expect([...seen.values()].every((count) => count === 1)).toBe(true);
    expect((await node.stop()).code).toBe(0);
  }, 150_000);
});

describe('statements on the embedded store', () => {
  it('PGlite never ends a statement at statement_timeout: its timers do not fire inside the wasm engine', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'baton-pglite-timeout-'));
    const store = await openPgliteStore(dir);
    try {
      await store.query("SET statement_timeout = '100ms'");
      expect((await store.query('SHOW statement_timeout')).rows).toEqual([{ statement_timeout: '100ms' }]);
      const started = performance.now();
      // Were the limit enforced, this would fail with SQLSTATE 57014 after 100 ms.
      await store.query('SELECT pg_sleep(0.6)');
      expect(performance.now() - started).toBeGreaterThanOrEqual(550);
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  }, 90_000);

  it('a long statement through /v1/sql holds the node until it ends, as documented, and is logged', async () => {
    const token = 'a-token-of-more-than-16-characters';
    const project = await tempProject({
      toml:
        `[node]\nname = "embedded"\ndata_dir = "data"\n[log]\nlevel = "info"\n` +
        `[http]\nport = ${await freePort()}\ntoken = "${token}"\n`,
    });
    // A fresh embedded store is created at start, which takes long on a loaded machine.
    const node = await startBatonNode(project.configPath, { readyTimeoutMs: 120_000 });
    const started = performance.now();
    const statement = fetch(`${node.url}/v1/sql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ sql: 'SELECT pg_sleep(2) AS slept' }),
      signal: AbortSignal.timeout(60_000),
    }).then((response) => ({ status: response.status, at: performance.now() - started }));
    // Sent while the statement runs (the node's loop is held from the moment it starts).
    await new Promise((resolve) => setTimeout(resolve, 300));
    const health = fetch(`${node.url}/healthz`, { signal: AbortSignal.timeout(60_000) }).then((response) => ({
      status: response.status,
      at: performance.now() - started,
    }));
    const [sqlAnswer, healthAnswer] = await Promise.all([statement, health]);
    expect(sqlAnswer.status).toBe(200);
    expect(sqlAnswer.at).toBeGreaterThanOrEqual(2_000);
    // The documented ceiling: nothing in the process answers while PGlite runs a statement.
    expect(healthAnswer.status).toBe(200);
    expect(healthAnswer.at).toBeGreaterThanOrEqual(1_900);
    await waitFor(
      () => Promise.resolve(/held the embedded store, and this process, for \d+ ms/.test(node.stderr)),
      10_000,
      'the log line of the long statement',
    );
    // Once it is over the node answers at once again.
    const after = performance.now();
    expect((await fetch(`${node.url}/healthz`)).status).toBe(200);
    expect(performance.now() - after).toBeLessThan(2_000);
    expect((await node.stop()).code).toBe(0);
  }, 180_000);
});
