// A node on a real streaming standby (pg-recovery): it runs on a store that takes no writes, secondary and
// not ready, saying why, with its role observable; when the standby is promoted (the old primary stopped
// first, as an operator would), it completes its start-up and acts as primary within a second: its
// primary-only queue runs, ingested records are stored, and the old primary's term is fenced out. With
// another elector (standalone) the node waits the same way and joins the election once its store takes writes.
import { join } from 'node:path';

import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';

import { assertFence } from '../../src/cluster/fence.js';
import { FencedError } from '../../src/errors.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { PrivatePostgres } from '../support/private-services.js';
import { startPrivatePostgres, startPrivateStandby } from '../support/private-services.js';
import type { BatonNodeProcess } from '../support/process.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

const servers: PrivatePostgres[] = [];

afterEach(async () => {
  await cleanupAll();
  for (const server of servers.splice(0).reverse()) await server.dispose();
});

const GROUP = 'pair';
const STANDBY_REASON = 'the store is a standby in recovery: waiting for promotion';
const quiet = pino({ level: 'silent' });

/** A node of the group on `server`, its failover files watched in `server`'s data directory (the default files). */
async function nodeProject(
  name: string,
  server: PrivatePostgres,
  elector = 'pg-recovery',
): Promise<{ configPath: string }> {
  const port = await freePort();
  const watch = elector === 'pg-recovery' ? `watch_path = "${server.data}"\n` : '';
  return tempProject({
    toml:
      `[node]\nname = "${name}"\ndata_dir = "data"\n[log]\nlevel = "info"\nformat = "json"\n` +
      `[http]\nport = ${port}\n` +
      `[store]\nurl = "${server.url}"\npool_size = 3\nquery_timeout_ms = 5000\n` +
      `[group]\nname = "${GROUP}"\nelector = "${elector}"\nheartbeat_ms = 500\n${watch}` +
      `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\nrun_on = "primary"\n`,
  });
}

async function getJson(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

async function cluster(node: BatonNodeProcess): Promise<{ role: string; term: number }> {
  const { body } = await getJson(`${node.url}/v1/cluster`);
  return { role: String(body['role']), term: Number(body['term']) };
}

async function ingest(node: BatonNodeProcess, ids: readonly number[]): Promise<Response> {
  return fetch(`${node.url}/v1/queues/ids/records`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-ndjson' },
    body: ids.map((id) => JSON.stringify({ id })).join('\n'),
    signal: AbortSignal.timeout(10_000),
  });
}

async function waitFor(check: () => Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The ids the handler stored on `server` (table seen), sorted. */
async function storedIds(server: PrivatePostgres): Promise<number[]> {
  const store = await openPostgresStore(
    { kind: 'postgres', url: server.url, poolSize: 1, statementTimeoutMs: 0 },
    { log: quiet, startupTimeoutMs: 5_000 },
  );
  try {
    const { rows } = await store.query('SELECT id FROM seen ORDER BY id');
    return rows.map((row) => Number(row['id']));
  } finally {
    await store.close();
  }
}

describe('a node on a streaming standby (pg-recovery)', () => {
  it('waits while its store is in recovery, then acts as primary within 1 s of the promotion', async () => {
    const primary = await startPrivatePostgres();
    servers.push(primary);
    // The node on the primary migrates it and takes term 1; its records replicate to the standby.
    const east = await startBatonNode((await nodeProject('east', primary)).configPath);
    await waitFor(async () => (await cluster(east)).role === 'primary', 'east primary');
    const eastTerm = (await cluster(east)).term;
    expect((await ingest(east, [1, 2, 3])).status).toBe(202);
    await waitFor(async () => (await storedIds(primary)).length === 3, 'records stored on the primary');

    const standby = await startPrivateStandby(primary);
    servers.push(standby);
    await waitFor(async () => (await storedIds(standby)).length === 3, 'records replicated to the standby');

    const west = await startBatonNode((await nodeProject('west', standby)).configPath, {
      until: 'listening',
    });
    // Up, secondary, not ready, and saying why.
    await waitFor(() => Promise.resolve(/running as secondary, not ready/.test(west.stderr)), 'west running');
    const readiness = await getJson(`${west.url}/readyz`);
    expect(readiness.status).toBe(503);
    expect(readiness.body).toMatchObject({
      status: 'not ready',
      state: 'running',
      reason: STANDBY_REASON,
    });
    const waiting = await getJson(`${west.url}/v1/cluster`);
    expect(waiting.status).toBe(200);
    expect(waiting.body).toMatchObject({ group: GROUP, elector: 'pg-recovery', role: 'secondary' });
    const metrics = await fetch(`${west.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/baton_role\{[^}]*role="secondary"[^}]*\} 1/);
    const refused = await ingest(west, [100]);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(await refused.json()).toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      error: expect.stringMatching(/standby in recovery/) as unknown,
    });
    // Other writes are refused as the store's state (503, Retry-After), not as a failed statement.
    const append = await fetch(`${west.url}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ key: 'refused' }),
    });
    expect(append.status).toBe(503);
    expect(append.headers.get('retry-after')).toMatch(/^\d+$/);
    expect((await getJson(`${west.url}/v1/queues`)).status).toBe(200);
    expect(west.stderr).toMatch(/the store is a standby in recovery: waiting for promotion/);
    expect(west.stderr).not.toMatch(/read-only transaction|during recovery/);

    // A waiting node stops cleanly on SIGTERM.
    const other = await startBatonNode((await nodeProject('north', standby)).configPath, {
      until: 'listening',
    });
    // Once it runs: `baton run` handles signals from then on (before, a SIGTERM ends the process as such).
    await waitFor(
      () => Promise.resolve(/running as secondary, not ready/.test(other.stderr)),
      'north waiting',
    );
    expect((await other.stop()).code).toBe(0);

    // The operator stops the old primary, then promotes the standby.
    await primary.stop();
    await standby.promote();
    const promoted = performance.now();
    let tookMs = Number.NaN;
    for (;;) {
      const seen = await cluster(west).catch(() => undefined);
      if (seen?.role === 'primary') {
        tookMs = performance.now() - promoted;
        break;
      }
      if (performance.now() - promoted > 30_000) throw new Error(`west not primary\n${west.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    console.log(`standby node primary ${Math.round(tookMs)} ms after pg_ctl promote returned`);
    expect(tookMs).toBeLessThan(1_000);
    const westTerm = (await cluster(west)).term;
    expect(westTerm).toBeGreaterThan(eastTerm);
    await waitFor(async () => (await getJson(`${west.url}/readyz`)).status === 200, 'west ready');

    // Primary-only work runs on it: records ingested over HTTP are stored on the promoted server.
    expect((await ingest(west, [4, 5, 6])).status).toBe(202);
    await waitFor(async () => (await storedIds(standby)).length === 6, 'records stored after the promotion');
    expect(await storedIds(standby)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(west.stderr).toMatch(/start-up complete/);

    // A late fenced write of the old primary's term is refused on the promoted server; the new term passes.
    const store = await openPostgresStore(
      { kind: 'postgres', url: standby.url, poolSize: 1, statementTimeoutMs: 0 },
      { log: quiet, startupTimeoutMs: 5_000 },
    );
    try {
      await expect(store.transaction((tx) => assertFence(tx, GROUP, eastTerm))).rejects.toBeInstanceOf(
        FencedError,
      );
      await store.transaction((tx) => assertFence(tx, GROUP, westTerm));
    } finally {
      await store.close();
    }
    // Waiting was said once, and nothing else went wrong: no refused write, LISTEN or heartbeat.
    const complaints = west.stderr
      .split('\n')
      .filter((line) => /"level":(40|50|60)/.test(line))
      .map((line) => (JSON.parse(line) as { msg: string }).msg);
    expect(complaints).toEqual([
      expect.stringMatching(/running as secondary, not ready: the store is a standby/),
    ]);
    expect(west.process.exitCode).toBeNull();
    expect((await west.stop()).code).toBe(0);
  }, 180_000);

  it('waits the same way with another elector, and joins the election once the store takes writes', async () => {
    const primary = await startPrivatePostgres();
    servers.push(primary);
    const alone = await nodeProject('alone', primary, 'standalone');
    // Migrated on the primary by the operator's command; the standby gets the schema by replication.
    expect((await runBaton(['-c', alone.configPath, 'migrate'])).code).toBe(0);
    const standby = await startPrivateStandby(primary);
    servers.push(standby);
    const node = await startBatonNode((await nodeProject('beside', standby, 'standalone')).configPath, {
      until: 'listening',
    });
    await waitFor(
      () => Promise.resolve(/running as secondary, not ready/.test(node.stderr)),
      'beside waiting',
    );
    expect((await getJson(`${node.url}/readyz`)).body['reason']).toBe(STANDBY_REASON);
    expect(await cluster(node)).toMatchObject({ role: 'secondary' });
    expect((await ingest(node, [7])).status).toBe(503);

    await primary.stop();
    await standby.promote();
    // No failover file here: the node looks every second whether its store takes writes.
    await waitFor(async () => (await cluster(node)).role === 'primary', 'beside primary', 15_000);
    expect((await ingest(node, [7, 8])).status).toBe(202);
    await waitFor(async () => (await storedIds(standby)).length === 2, 'records stored after the promotion');
    expect(node.stderr).not.toMatch(/"level":50/);
    expect((await node.stop()).code).toBe(0);
  }, 180_000);
});
