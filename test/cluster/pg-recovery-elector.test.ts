// The pg-recovery elector (Hermes): the role follows the local PostgreSQL. A server that is not in recovery
// makes the node primary, with a term above the group's fence; a failover file touched in the watched folder
// makes it look again at once, not at the next interval; an unreachable server makes it secondary, retried
// with back-off, never thrown.
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import pg from 'pg';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';

import { PgRecoveryElector } from '../../src/cluster/electors/pg-recovery.js';
import { Group } from '../../src/cluster/group.js';
import type { PgRecoveryElectorOptions } from '../../src/cluster/electors/pg-recovery.js';
import type { ElectorState, StateCause } from '../../src/cluster/types.js';
import { resolveConfig } from '../../src/config/load.js';
import { BackendUnavailableError } from '../../src/errors.js';
import { builtinMigrations, applyMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { createTestDatabase } from '../support/postgres.js';
import { freePort } from '../support/process.js';

const TIMING = { group: 'hermes', leaseMs: 1_000, renewDeadlineMs: 600, heartbeatMs: 200 };
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

interface Started {
  readonly elector: PgRecoveryElector;
  readonly calls: Array<{ at: number; state: ElectorState; cause: StateCause }>;
  readonly logs: Array<{ level: number; msg: string; retryInMs?: number }>;
  state(): ElectorState | undefined;
}

async function start(
  options: Omit<PgRecoveryElectorOptions, 'log' | keyof typeof TIMING | 'node'> & { node?: string },
): Promise<Started> {
  const logs: Started['logs'] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => logs.push(parseLog(line)) });
  const elector = new PgRecoveryElector({ ...TIMING, node: 'n1', ...options, log });
  cleanups.push(() => elector.stop());
  const calls: Started['calls'] = [];
  await elector.start((state, cause) => calls.push({ at: performance.now(), state, cause }));
  return { elector, calls, logs, state: () => calls.at(-1)?.state };
}

function parseLog(line: string): Started['logs'][number] {
  const parsed: unknown = JSON.parse(line);
  if (typeof parsed !== 'object' || parsed === null) return { level: 0, msg: line };
  const level = 'level' in parsed && typeof parsed.level === 'number' ? parsed.level : 0;
  const msg = 'msg' in parsed && typeof parsed.msg === 'string' ? parsed.msg : '';
  const retry = 'retryInMs' in parsed && typeof parsed.retryInMs === 'number' ? parsed.retryInMs : undefined;
  return retry === undefined ? { level, msg } : { level, msg, retryInMs: retry };
}

async function waitFor(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** group.failover_files of a config that does not name them, as the elector factory passes it on. */
function defaultFailoverFiles(): readonly string[] {
  const config = resolveConfig(
    { store: { url: 'postgres://db/sink' }, group: { name: 'g', elector: 'pg-recovery' } },
    { baseDir: tmpdir(), env: {} },
  );
  return config.group?.failoverFiles ?? [];
}

describe('pg-recovery elector', () => {
  it('is primary on a server that is not in recovery, with a term above the fence', async () => {
    const database = await createTestDatabase();
    cleanups.push(() => database.drop());
    const first = await start({ url: database.url });
    expect(first.calls.map((call) => [call.state, call.cause.cause])).toEqual([
      [{ role: 'primary', term: 1, leader: 'n1' }, 'promoted'],
    ]);
    await first.elector.stop();
    expect(first.state()).toEqual({ role: 'secondary', term: 1, leader: undefined });

    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    try {
      await client.query('CREATE TABLE baton_fence (group_name text PRIMARY KEY, term bigint NOT NULL)');
      await client.query("INSERT INTO baton_fence VALUES ('hermes', 7), ('other', 40)");
    } finally {
      await client.end();
    }
    const second = await start({ url: database.url, node: 'n2' });
    expect(second.state()).toEqual({ role: 'primary', term: 8, leader: 'n2' });

    await second.elector.resign();
    expect(second.state()?.role).toBe('primary');
    expect(
      second.logs.some((line) => line.level === 40 && line.msg.includes('resign is not supported')),
    ).toBe(true);
  });

  it('checks at once when a failover file of the default config changes, without waiting for the interval', async () => {
    const database = await createTestDatabase();
    cleanups.push(() => database.drop());
    const folder = await mkdtemp(join(tmpdir(), 'baton-pg-recovery-'));
    cleanups.push(() => rm(folder, { recursive: true, force: true }));
    let inRecovery = false;
    let checks = 0;
    const started = await start({
      url: database.url,
      watchPath: folder,
      // What a config that names no failover_files gets: the documented files are watched.
      failoverFiles: defaultFailoverFiles(),
      checkIntervalMs: 60_000, // far beyond this test: only the file can trigger a check
      isInRecovery: () => {
        checks++;
        return Promise.resolve(inRecovery);
      },
    });
    expect(started.state()).toEqual({ role: 'primary', term: 1, leader: 'n1' });
    expect(checks).toBe(1);

    inRecovery = true;
    const demotedFrom = performance.now();
    await writeFile(join(folder, 'standby.signal'), '');
    await waitFor(() => started.state()?.role === 'secondary', 'the node to become secondary', 5_000);
    const demotedMs = (started.calls.at(-1)?.at ?? NaN) - demotedFrom;
    expect(started.calls.at(-1)?.cause.cause).toBe('demoted');

    inRecovery = false;
    const promotedFrom = performance.now();
    await unlink(join(folder, 'standby.signal'));
    await waitFor(() => started.state()?.role === 'primary', 'the node to become primary again', 5_000);
    const promotedMs = (started.calls.at(-1)?.at ?? NaN) - promotedFrom;
    expect(started.calls.at(-1)).toMatchObject({
      state: { role: 'primary', term: 2, leader: 'n1' },
      cause: { cause: 'promoted' },
    });
    console.log(
      `pg-recovery elector: file event → secondary in ${demotedMs.toFixed(0)} ms, ` +
        `→ primary in ${promotedMs.toFixed(0)} ms (interval 60 s)`,
    );
    expect(demotedMs).toBeLessThan(1_000);
    expect(promotedMs).toBeLessThan(1_000);
    expect(started.logs.some((line) => line.msg.includes('a failover file changed'))).toBe(true);
  });

  it('reports a promotion again, with a new term and after a back-off, when the node could not act on it', async () => {
    const database = await createTestDatabase();
    cleanups.push(() => database.drop());
    const started = await start({ url: database.url, isInRecovery: () => Promise.resolve(false) });
    expect(started.state()).toEqual({ role: 'primary', term: 1, leader: 'n1' });
    // As the group does when its fence raise fails: the node stays secondary and says so.
    const refusedAt = performance.now();
    await started.elector.resign({ refused: true });
    expect(started.state()?.role).toBe('secondary');
    await waitFor(() => started.state()?.role === 'primary', 'the promotion to be reported again', 15_000);
    const again = started.calls.at(-1);
    expect(again).toMatchObject({
      state: { role: 'primary', term: 2, leader: 'n1' },
      cause: { cause: 'promoted' },
    });
    // Not at once: after the back-off (250 ms, ±20 %).
    expect((again?.at ?? 0) - refusedAt).toBeGreaterThanOrEqual(190);
    expect(started.logs.some((line) => line.msg.includes('could not act as primary'))).toBe(true);
  });

  it('is secondary while PostgreSQL is unreachable, retries with back-off, and never throws', async () => {
    const port = await freePort();
    const started = await start({ url: `postgres://postgres@127.0.0.1:${port}/postgres` });
    expect(started.calls.map((call) => [call.state, call.cause.cause])).toEqual([
      [{ role: 'secondary', term: 0, leader: undefined }, 'unreachable'],
    ]);
    const retry = started.logs.find((line) => line.retryInMs !== undefined);
    expect(retry?.retryInMs).toBeGreaterThanOrEqual(800);
    expect(retry?.retryInMs).toBeLessThanOrEqual(1_200);
    const stoppedAt = performance.now();
    await started.elector.stop();
    expect(performance.now() - stoppedAt).toBeLessThan(1_000);
  });

  it('becomes primary once the server answers again after the back-off, watching or not', async () => {
    let reachable = false;
    const started = await start({
      url: 'postgres://postgres@127.0.0.1:1/postgres', // the fence cannot be read either: terms count locally
      watchPath: join(tmpdir(), 'baton-no-such-folder', 'data'),
      isInRecovery: () => (reachable ? Promise.resolve(false) : Promise.reject(new Error('ECONNREFUSED'))),
    });
    expect(started.state()).toEqual({ role: 'secondary', term: 0, leader: undefined });
    reachable = true;
    await waitFor(() => started.state()?.role === 'primary', 'the retry after about 1 s', 5_000);
    expect(started.state()).toEqual({ role: 'primary', term: 1, leader: 'n1' });
    expect(started.calls.map((call) => call.cause.cause)).toEqual(['unreachable', 'promoted']);
    // A folder that cannot be watched is no reason to stop: the interval still checks.
    expect(started.logs.some((line) => line.level === 40 && line.msg.includes('cannot watch'))).toBe(true);
  });
});

describe('a group on the pg-recovery elector', () => {
  it('acts as primary once a fence raise that failed at promotion succeeds on a later try', async () => {
    const database = await createTestDatabase();
    cleanups.push(() => database.drop());
    const log = pino({ level: 'silent' });
    const real = await openPostgresStore(
      { kind: 'postgres', url: database.url, poolSize: 2, statementTimeoutMs: 0 },
      { log, startupTimeoutMs: 10_000 },
    );
    cleanups.push(() => real.close());
    await applyMigrations(real, await builtinMigrations());
    // The fence raise is the group's only store transaction: the first one fails, as when the store is
    // unreachable for a moment at promotion.
    let refusals = 1;
    const store: Store = {
      ...real,
      transaction: (work, options) =>
        refusals-- > 0
          ? Promise.reject(new BackendUnavailableError('store', 'unreachable for this test'))
          : real.transaction(work, options),
    };
    const config = resolveConfig(
      {
        store: { url: database.url },
        group: { name: 'hermes', elector: 'pg-recovery', lease_ms: 1_000, heartbeat_ms: 200 },
      },
      { baseDir: tmpdir(), env: {} },
    );
    const group = new Group({
      config: config.group,
      node: 'n1',
      store,
      log,
      storeUrl: database.url,
      address: () => undefined,
    });
    cleanups.push(() => group.stop());
    await group.start();
    expect(group.state.role).toBe('secondary');
    await waitFor(() => group.state.role === 'primary', 'the node to act as primary', 15_000);
    expect(group.state).toEqual({ role: 'primary', term: 2, leader: 'n1' });
    expect(refusals).toBeLessThan(0);
  });
});
