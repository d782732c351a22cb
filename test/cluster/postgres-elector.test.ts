// The postgres elector on a real server: one primary per term at every moment (checked on every listener call,
// timed on this host's monotonic clock), crash failover in milliseconds, a partitioned primary stepping down
// before anyone else takes over, fencing of the deposed primary, manual failover to a named node, and a
// server unreachable at start.
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';

import { sql } from 'drizzle-orm';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { PostgresElector } from '../../src/cluster/electors/postgres.js';
import { assertFence, raiseFence } from '../../src/cluster/fence.js';
import { StoreMembership } from '../../src/cluster/membership-store.js';
import type { ElectorState, StateCause } from '../../src/cluster/types.js';
import { FencedError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { executeIn } from '../../src/store/store.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { TcpProxy } from '../support/tcp-proxy.js';
import { startTcpProxy } from '../support/tcp-proxy.js';

const TIMINGS = { leaseMs: 1500, renewDeadlineMs: 1000, heartbeatMs: 200 };

interface Call {
  readonly node: string;
  readonly at: number;
  readonly state: ElectorState;
  readonly cause: StateCause;
}

/** A logger whose lines the test can read (and that prints nothing). */
function capturingLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

async function waitFor<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('postgres elector', () => {
  let database: TestDatabase;
  let store: Store;
  let calls: Call[] = [];
  let electors: PostgresElector[] = [];
  let proxies: TcpProxy[] = [];
  let timers: NodeJS.Timeout[] = [];
  let groupCount = 0;
  let group = '';

  beforeAll(async () => {
    database = await createTestDatabase();
    store = await openPostgresStore(
      { kind: 'postgres', url: database.url, poolSize: 4, statementTimeoutMs: 0 },
      { log: pino({ level: 'silent' }), startupTimeoutMs: 5000 },
    );
    await applyMigrations(store, await builtinMigrations());
    await store.execute(sql`CREATE TABLE fenced_writes (group_name text, term bigint)`);
  });

  afterEach(async () => {
    // Reset first, so that a failed stop cannot leak one test's history into the next.
    const [running, opened] = [electors, proxies];
    for (const timer of timers) clearInterval(timer);
    [calls, electors, proxies, timers] = [[], [], [], []];
    groupCount += 1;
    await Promise.all(running.map((elector) => elector.stop()));
    await Promise.all(opened.map((proxy) => proxy.close()));
  });

  afterAll(async () => {
    await store?.close();
    await database?.drop();
  });

  /** Starts an elector of this test's group, recording every listener call. */
  async function start(node: string, options: { url?: string; log?: Logger; throwing?: boolean } = {}) {
    group = `g${groupCount}`;
    const elector = new PostgresElector({
      node,
      group,
      ...TIMINGS,
      url: options.url ?? database.url,
      log: options.log ?? pino({ level: 'silent' }),
    });
    electors.push(elector);
    const record = calls; // this test's history, even for calls made while afterEach stops the elector
    await elector.start((state, cause) => {
      record.push({ node, at: performance.now(), state, cause });
      // A listener that throws must not disturb the elector.
      if (options.throwing) throw new Error('listener failure');
    });
    return elector;
  }

  const last = (node: string): Call | undefined => calls.filter((call) => call.node === node).at(-1);
  const primaries = (): Call[] =>
    [...new Set(calls.map((call) => call.node))].flatMap((node) => {
      const call = last(node);
      return call?.state.role === 'primary' ? [call] : [];
    });
  /** Waits for a primary with a term above `term`, and returns its 'elected' call. */
  const nextPrimary = (term: number, timeoutMs?: number): Promise<Call> =>
    waitFor(
      `a primary above term ${term}`,
      () => primaries().find((call) => call.state.term > term),
      timeoutMs,
    );
  const proxyUrl = (proxy: TcpProxy): string => {
    const url = new URL(database.url);
    url.port = String(proxy.port);
    return url.toString();
  };
  /** Sessions of this group's electors waiting for the lock. */
  const waiters = async (): Promise<number> => {
    const [row] = await store.execute(
      sql`SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    );
    return Number(row?.['n']);
  };
  /** Terminates a node's elector session from outside, as if its process died; returns how many ended. */
  const terminateSession = async (node: string): Promise<number> => {
    const rows = await store.execute(
      sql`SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = ${`baton-elector:${node}`}`,
    );
    return rows.length;
  };

  /**
   * Checks the whole history: each term has one primary, terms grow, and no two nodes' intervals
   * [reported primary, reported not primary] intersect.
   */
  function expectOnePrimaryAtATime(): void {
    const reigns: Array<{ node: string; term: number; from: number; to: number }> = [];
    for (const [index, call] of calls.entries()) {
      if (call.state.role !== 'primary') continue;
      const end = calls
        .slice(index + 1)
        .find((later) => later.node === call.node && later.state.role !== 'primary');
      reigns.push({ node: call.node, term: call.state.term, from: call.at, to: end?.at ?? Infinity });
    }
    reigns.sort((a, b) => a.from - b.from);
    for (const [index, reign] of reigns.entries()) {
      const previous = reigns[index - 1];
      if (!previous) continue;
      expect(reign.term, `term after ${previous.node}'s term ${previous.term}`).toBeGreaterThan(
        previous.term,
      );
      expect(
        reign.from,
        `${reign.node} (term ${reign.term}) began before ${previous.node} stepped down`,
      ).toBeGreaterThanOrEqual(previous.to);
    }
  }

  it('makes a lone elector primary of term 1, and hands over at once on stop', async () => {
    await start('a');
    // The first state is delivered before start() resolves.
    expect(calls[0]).toMatchObject({ node: 'a', state: { role: 'secondary', term: 0, leader: undefined } });
    const a = await nextPrimary(0);
    expect(a).toMatchObject({ node: 'a', state: { term: 1, leader: 'a' }, cause: { cause: 'elected' } });

    const b = await start('b', { throwing: true });
    expect(last('b')).toMatchObject({ state: { role: 'secondary', term: 1, leader: 'a' } });
    const stopping = performance.now();
    await Promise.all([electors[0]?.stop(), electors[0]?.stop()]);
    const elected = await nextPrimary(1);
    expect(elected).toMatchObject({
      node: 'b',
      state: { term: 2, leader: 'b' },
      cause: { cause: 'elected' },
    });
    console.log(`stop failover: b primary after ${(elected.at - stopping).toFixed(1)} ms`);
    expect(elected.at - stopping).toBeLessThan(1000);
    expect(last('a')).toMatchObject({ state: { role: 'secondary' }, cause: { cause: 'stopped' } });
    await b.stop();
    expectOnePrimaryAtATime();
  });

  it('keeps one primary per term while 20 electors race and primaries keep failing', async () => {
    const names = Array.from({ length: 20 }, (_, index) => `n${String(index).padStart(2, '0')}`);
    await Promise.all(names.map((node) => start(node)));
    let current = await nextPrimary(0);
    const stopped = new Set<string>();
    for (let round = 0; round < 6; round++) {
      // Alternate a clean stop and a dead session (the node lives on and competes again).
      if (round % 2 === 0) {
        stopped.add(current.node);
        await electors[names.indexOf(current.node)]?.stop();
      } else {
        await terminateSession(current.node);
      }
      current = await nextPrimary(current.state.term);
    }
    // Under load a primary may step down on its own meanwhile: wait for the running electors to agree.
    await waitFor('the running electors to agree on one primary', () => {
      const running = names.filter((node) => !stopped.has(node)).map((node) => last(node)?.state);
      const [primary, ...others] = primaries();
      return (
        primary !== undefined &&
        others.length === 0 &&
        running.every((state) => state?.term === primary.state.term && state.leader === primary.node)
      );
    });
    expectOnePrimaryAtATime();
  }, 30_000);

  it('fails over in milliseconds when the primary session dies', async () => {
    await start('a');
    await nextPrimary(0);
    await start('b');
    await start('c');
    await waitFor('two waiters', async () => (await waiters()) === 2);

    const killed = performance.now();
    expect(await terminateSession('a')).toBe(1);
    const elected = await nextPrimary(1);
    const took = elected.at - killed;
    console.log(
      `crash failover: ${elected.node} primary of term ${elected.state.term} after ${took.toFixed(1)} ms`,
    );
    expect(took).toBeLessThan(2000);
    expect(elected.state.term).toBe(2);
    expect(['b', 'c']).toContain(elected.node);
    expect(last('a')).toMatchObject({ state: { role: 'secondary' }, cause: { cause: 'lost-lease' } });
    expectOnePrimaryAtATime();
  });

  it('steps a partitioned primary down before another node takes over', async () => {
    const proxy = await startTcpProxy({
      host: '127.0.0.1',
      port: Number(new URL(database.url).port || 5432),
    });
    proxies.push(proxy);
    await start('a', { url: proxyUrl(proxy) });
    const old = await nextPrimary(0);
    await start('b');
    await waitFor('b to wait for the lock', async () => (await waiters()) === 1);

    const cut = performance.now();
    proxy.blackhole();
    const elected = await nextPrimary(old.state.term, 15_000);
    const steppedDown = calls.find(
      (call) => call.node === 'a' && call.at > cut && call.state.role !== 'primary',
    );
    console.log(
      `partition: a stepped down after ${((steppedDown?.at ?? NaN) - cut).toFixed(0)} ms, ` +
        `b primary after ${(elected.at - cut).toFixed(0)} ms`,
    );
    expect(steppedDown).toMatchObject({ cause: { cause: 'renew-failed' } });
    expect(steppedDown?.at).toBeLessThan(elected.at);
    expect(elected).toMatchObject({ node: 'b', cause: { cause: 'elected' } });
    expect(elected.state.term).toBeGreaterThan(old.state.term);

    // Once the network is back, the old primary competes again: its cut session was ended, not left hanging.
    proxy.restore();
    await waitFor('a to wait for the lock again', async () => (await waiters()) === 1, 15_000);
    await waitFor('a to learn that b is primary', () => last('a')?.state.leader === 'b');
    expect(last('a')).toMatchObject({
      state: { role: 'secondary', term: elected.state.term },
      cause: { cause: 'new-leader' },
    });
    expectOnePrimaryAtATime();
  }, 30_000);

  it('fences the deposed primary: its late write fails and does not commit', async () => {
    await start('a');
    const old = await nextPrimary(0);
    expect(await raiseFence(store, group, old.state.term)).toBe(true);
    await start('b');
    await waitFor('b to wait for the lock', async () => (await waiters()) === 1);
    expect(await terminateSession('a')).toBe(1);
    const elected = await nextPrimary(old.state.term);
    // What the node does before acting on 'elected'.
    expect(await raiseFence(store, group, elected.state.term)).toBe(true);

    const lateWrite = store.transaction(async (tx) => {
      await executeIn(tx, sql`INSERT INTO fenced_writes VALUES (${group}, ${old.state.term})`);
      await assertFence(tx, group, old.state.term);
    });
    await expect(lateWrite).rejects.toBeInstanceOf(FencedError);
    await store.transaction(async (tx) => {
      await assertFence(tx, group, elected.state.term);
      await executeIn(tx, sql`INSERT INTO fenced_writes VALUES (${group}, ${elected.state.term})`);
    });
    const rows = await store.execute(sql`SELECT term FROM fenced_writes WHERE group_name = ${group}`);
    expect(rows.map((row) => Number(row['term']))).toEqual([elected.state.term]);
  });

  it('raises the fence past a deposed primary paused inside a fenced transaction', async () => {
    const fenceGroup = `paused-${groupCount}`;
    expect(await raiseFence(store, fenceGroup, 1)).toBe(true);
    // The old primary checked the fence and then froze before committing: its share lock stays.
    let release: () => void = () => undefined;
    const frozen = store.transaction(async (tx) => {
      await assertFence(tx, fenceGroup, 1);
      await executeIn(tx, sql`INSERT INTO fenced_writes VALUES (${fenceGroup}, 1)`);
      await new Promise<void>((resolve) => (release = resolve));
    });
    frozen.catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 200));
    // A raise is a new term: the blocking session is ended as soon as it is seen, not after a wait.
    const { log, lines } = capturingLogger();
    const started = Date.now();
    expect(await raiseFence(store, fenceGroup, 2, { log })).toBe(true);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(lines.join('')).toContain('fence: ended the sessions of a deposed primary that held the fence');
    release();
    // Its session was ended: the frozen write never commits.
    await expect(frozen).rejects.toThrow();
    const rows = await store.execute(sql`SELECT term FROM fenced_writes WHERE group_name = ${fenceGroup}`);
    expect(rows).toEqual([]);
  });

  it('hands over to the node named by a manual failover, even when another waits ahead of it', async () => {
    const membership = new StoreMembership(store, `g${groupCount}`);
    const beat = (): void => {
      for (const node of ['a', 'b', 'c']) {
        void membership.heartbeat({ node, address: undefined, role: 'secondary', term: 0 });
      }
    };
    beat();
    timers.push(setInterval(beat, TIMINGS.heartbeatMs));
    await start('a');
    const old = await nextPrimary(0);
    // b queues for the lock before c, so b is offered it first and must defer.
    await start('b');
    await waitFor('b to wait for the lock', async () => (await waiters()) === 1);
    await start('c');
    await waitFor('c to wait for the lock', async () => (await waiters()) === 2);

    await electors[0]?.resign({ to: 'c' });
    expect(last('a')).toMatchObject({ state: { role: 'secondary' }, cause: { cause: 'resigned' } });
    const elected = await nextPrimary(old.state.term);
    expect(elected).toMatchObject({ node: 'c', state: { term: old.state.term + 1 } });
    expect(calls.filter((call) => call.node === 'b' && call.state.role === 'primary')).toEqual([]);
    expectOnePrimaryAtATime();
  });

  it('starts secondary when PostgreSQL is unreachable, and becomes primary once it is back', async () => {
    const proxy = await startTcpProxy({
      host: '127.0.0.1',
      port: Number(new URL(database.url).port || 5432),
    });
    proxies.push(proxy);
    proxy.blackhole();
    const { log, lines } = capturingLogger();
    await start('a', { url: proxyUrl(proxy), log });
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({
      state: { role: 'secondary', term: 0 },
      cause: { cause: 'unreachable' },
    });
    // Each failed attempt is logged with its back-off.
    await waitFor('a retry to be logged', () => lines.some((line) => line.includes('retryInMs')));

    proxy.restore();
    const elected = await nextPrimary(0, 15_000);
    expect(elected).toMatchObject({ node: 'a', state: { term: 1 }, cause: { cause: 'elected' } });
  }, 30_000);
});
