// The redis elector and Redis membership on real Redis: one winner per term among 20 racing nodes, crash
// failover within about lease_ms, a partitioned primary that steps down before anyone else can win,
// manual failover to a named node, and a Redis restart survived. Every listener call is recorded with a
// timestamp on this process's monotonic clock, so overlaps of primaries can be checked, not guessed.
import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';

import { RedisElector } from '../../src/cluster/electors/redis.js';
import { memberKey, RedisMembership } from '../../src/cluster/membership-redis.js';
import type { ElectorState, StateCause } from '../../src/cluster/types.js';
import { startPrivateRedis } from '../support/private-services.js';
import { freePort } from '../support/process.js';
import { REDIS_URL } from '../support/redis.js';
import { startTcpProxy } from '../support/tcp-proxy.js';

const LEASE_MS = 1_000;
const TIMING = { leaseMs: LEASE_MS, renewDeadlineMs: 600, heartbeatMs: 200 };
const log = pino({ level: process.env['BATON_TEST_LOG'] ?? 'silent' });

interface Call {
  readonly node: string;
  readonly at: number;
  readonly state: ElectorState;
  readonly cause: StateCause;
}

/** Electors of one test group, with every listener call they made. */
class Group {
  readonly name = `t${randomBytes(5).toString('hex')}`;
  readonly calls: Call[] = [];
  readonly electors = new Map<string, RedisElector>();
  readonly states = new Map<string, ElectorState>();

  async start(node: string, url = REDIS_URL): Promise<RedisElector> {
    const elector = new RedisElector({ ...TIMING, node, group: this.name, url, log: log.child({ node }) });
    this.electors.set(node, elector);
    await elector.start((state, cause) => {
      this.calls.push({ node, at: performance.now(), state, cause });
      this.states.set(node, state);
    });
    return elector;
  }

  primaries(): string[] {
    return [...this.states].filter(([, state]) => state.role === 'primary').map(([node]) => node);
  }

  /** The single primary that every elector agrees on, or undefined. */
  agreed(): { node: string; term: number } | undefined {
    const [node, ...others] = this.primaries();
    if (node === undefined || others.length > 0) return undefined;
    const term = this.states.get(node)?.term ?? 0;
    const all = [...this.states.values()].every((state) => state.leader === node && state.term === term);
    return all ? { node, term } : undefined;
  }

  /** When `node` last reported `cause` (after `since`). */
  when(node: string, cause: string, since = 0): number | undefined {
    return this.calls.find((call) => call.node === node && call.cause.cause === cause && call.at >= since)
      ?.at;
  }

  /** One primary per term, and no two nodes primary at the same moment. */
  checkInvariants(): void {
    const reigns: Array<{ node: string; term: number; from: number; to: number }> = [];
    const open = new Map<string, { term: number; from: number }>();
    for (const call of this.calls) {
      const current = open.get(call.node);
      if (current && (call.state.role !== 'primary' || call.state.term !== current.term)) {
        reigns.push({ node: call.node, term: current.term, from: current.from, to: call.at });
        open.delete(call.node);
      }
      if (call.state.role === 'primary' && !open.has(call.node)) {
        open.set(call.node, { term: call.state.term, from: call.at });
      }
    }
    for (const [node, { term, from }] of open) reigns.push({ node, term, from, to: Infinity });
    const winners = new Map<number, string>();
    for (const reign of reigns) {
      expect(winners.get(reign.term) ?? reign.node, `two primaries in term ${reign.term}`).toBe(reign.node);
      winners.set(reign.term, reign.node);
    }
    for (const a of reigns) {
      for (const b of reigns) {
        if (a === b || a.node === b.node) continue;
        const overlap = a.from < b.to && b.from < a.to;
        expect(overlap, `${a.node} (term ${a.term}) and ${b.node} (term ${b.term}) overlap`).toBe(false);
      }
    }
  }

  async stop(): Promise<void> {
    await Promise.all([...this.electors.values()].map((elector) => elector.stop()));
  }
}

const cleanups: Array<() => Promise<void>> = [];
const groups: Group[] = [];

function group(): Group {
  const created = new Group();
  groups.push(created);
  return created;
}

afterEach(async () => {
  // Electors first, while the servers and proxies they use are still there; then those; then the keys.
  for (const done of groups) await done.stop();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  const admin = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    for (const done of groups.splice(0)) {
      const keys = await admin.keys(`baton:group:${done.name}:*`);
      if (keys.length > 0) await admin.del(...keys);
    }
  } finally {
    admin.disconnect();
  }
});

async function waitFor<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  ms = 10_000,
): Promise<T> {
  const deadline = performance.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('redis elector', () => {
  it('makes a lone node primary in term 1 before start resolves', async () => {
    const g = group();
    await g.start('a');
    expect(g.states.get('a')).toEqual({ role: 'primary', term: 1, leader: 'a' });
    expect(g.calls.map((call) => call.cause.cause)).toEqual(['elected']);
    await g.electors.get('a')?.stop();
    expect(g.states.get('a')?.role).toBe('secondary');
    expect(g.when('a', 'stopped')).toBeDefined();
  });

  it('elects exactly one primary per term among 20 nodes, and hands over at once on stop', async () => {
    const g = group();
    const nodes = Array.from({ length: 20 }, (_, i) => `n${String(i).padStart(2, '0')}`);
    await Promise.all(nodes.map((node) => g.start(node)));
    const first = await waitFor(() => g.agreed(), 'all 20 to agree on one primary');
    expect(first.term).toBe(1);
    expect(g.primaries()).toEqual([first.node]);

    const stoppedAt = performance.now();
    await g.electors.get(first.node)?.stop();
    g.states.delete(first.node);
    const second = await waitFor(() => g.agreed(), 'a new primary after the first stopped');
    const tookMs = (g.when(second.node, 'elected', stoppedAt) ?? NaN) - stoppedAt;
    console.log(
      `redis elector: handover on stop took ${tookMs.toFixed(0)} ms (poll ${TIMING.heartbeatMs} ms)`,
    );
    expect(second.term).toBe(2);
    expect(tookMs).toBeLessThan(TIMING.heartbeatMs + 500);
    g.checkInvariants();
  });

  it('fails over within about lease_ms when the primary crashes without releasing', async () => {
    const g = group();
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: 6379 });
    cleanups.push(() => proxy.close());
    await g.start('a', `redis://127.0.0.1:${proxy.port}`);
    expect(g.states.get('a')?.role).toBe('primary');
    await Promise.all([g.start('b'), g.start('c')]);
    await waitFor(() => g.agreed(), 'b and c to follow a');

    const crashedAt = performance.now();
    await proxy.close(); // every connection of a is reset, and it cannot reconnect: a dead node for Redis
    const next = await waitFor(
      () => ['b', 'c'].find((node) => g.states.get(node)?.role === 'primary'),
      'b or c',
    );
    const failoverMs = (g.when(next, 'elected', crashedAt) ?? NaN) - crashedAt;
    console.log(`redis elector: crash failover took ${failoverMs.toFixed(0)} ms (lease ${LEASE_MS} ms)`);
    // The crashed lease is not released: someone else wins only once it has run out.
    expect(failoverMs).toBeGreaterThan(LEASE_MS - TIMING.heartbeatMs - 100);
    expect(failoverMs).toBeLessThan(LEASE_MS + 2 * TIMING.heartbeatMs + 500);
    expect(g.states.get(next)?.term).toBe(2);
    expect(g.when('a', 'renew-failed')).toBeDefined();
    g.checkInvariants();
  });

  it('steps a partitioned primary down before another node wins, with a higher term', async () => {
    const g = group();
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: 6379 });
    cleanups.push(() => proxy.close());
    await g.start('a', `redis://127.0.0.1:${proxy.port}`);
    await Promise.all([g.start('b'), g.start('c')]);
    await waitFor(() => g.agreed(), 'b and c to follow a');

    const cutAt = performance.now();
    proxy.blackhole();
    const next = await waitFor(
      () => ['b', 'c'].find((node) => g.states.get(node)?.role === 'primary'),
      'b or c',
    );
    const steppedDownAt = g.when('a', 'renew-failed', cutAt) ?? NaN;
    const electedAt = g.when(next, 'elected', cutAt) ?? NaN;
    console.log(
      `redis elector: partition: a stepped down after ${(steppedDownAt - cutAt).toFixed(0)} ms, ` +
        `${next} primary after ${(electedAt - cutAt).toFixed(0)} ms ` +
        `(deadline ${TIMING.renewDeadlineMs} ms, lease ${LEASE_MS} ms)`,
    );
    expect(steppedDownAt).toBeLessThan(electedAt);
    expect(g.states.get(next)?.term).toBeGreaterThan(1);
    g.checkInvariants();

    proxy.restore();
    const back = await waitFor(() => g.agreed(), 'a to follow the new primary after the partition', 20_000);
    expect(back.node).toBe(next);
    g.checkInvariants();
  });

  it('hands over to the node named by resign({ to }), and to another node without one', async () => {
    const g = group();
    const membership = new RedisMembership({ url: REDIS_URL, group: g.name, log, ttlMs: 10_000 });
    cleanups.push(() => membership.close());
    for (const node of ['a', 'b', 'c']) await g.start(node);
    for (const node of ['a', 'b', 'c'])
      await membership.heartbeat({ node, address: undefined, role: 'secondary', term: 0 });
    const first = await waitFor(() => g.agreed(), 'one primary');
    const [other, named] = ['a', 'b', 'c']
      .filter((node) => node !== first.node)
      .sort()
      .reverse() as [string, string];

    const askedAt = performance.now();
    await g.electors.get(first.node)?.resign({ to: named });
    const second = await waitFor(() => g.agreed(), `${named} to take over`);
    expect(second).toEqual({ node: named, term: first.term + 1 });
    expect(g.when(first.node, 'resigned', askedAt)).toBeDefined();
    expect(g.calls.some((call) => call.node === other && call.state.role === 'primary')).toBe(false);
    const handoverMs = (g.when(named, 'elected', askedAt) ?? NaN) - askedAt;
    console.log(`redis elector: resign({ to }) took ${handoverMs.toFixed(0)} ms`);

    await g.electors.get(named)?.resign();
    const third = await waitFor(() => g.agreed(), 'another node to take over');
    expect(third.node).not.toBe(named);
    expect(third.term).toBe(first.term + 2);
    g.checkInvariants();
  });

  it('survives a Redis restart, and one primary emerges', async () => {
    const redis = await startPrivateRedis();
    cleanups.push(() => redis.dispose());
    const g = group();
    await Promise.all(['a', 'b', 'c'].map((node) => g.start(node, redis.url)));
    const before = await waitFor(() => g.agreed(), 'one primary');

    const restartedAt = performance.now();
    await redis.restart();
    // Wait until every node has been through the outage (or the primary renewed across it) and agrees.
    const after = await waitFor(
      () => (performance.now() - restartedAt > LEASE_MS ? g.agreed() : undefined),
      'one primary after the restart',
      25_000,
    );
    console.log(
      `redis elector: after a Redis restart, ${after.node} is primary in term ${after.term} ` +
        `(before: ${before.node} in term ${before.term}), ${(performance.now() - restartedAt).toFixed(0)} ms`,
    );
    expect(after.term).toBeGreaterThanOrEqual(before.term);
    g.checkInvariants();
  });

  it('starts as a secondary, without throwing, when Redis is unreachable', async () => {
    const g = group();
    const elector = await g.start('a', `redis://127.0.0.1:${await freePort()}`);
    expect(g.states.get('a')).toEqual({ role: 'secondary', term: 0, leader: undefined });
    expect(g.calls[0]?.cause.cause).toBe('unreachable');
    const stoppedAt = performance.now();
    await elector.stop();
    expect(performance.now() - stoppedAt).toBeLessThan(1_000);
  });
});

describe('redis membership', () => {
  it('lists members seen recently, by name, on the Redis clock', async () => {
    const name = `t${randomBytes(5).toString('hex')}`;
    const membership = new RedisMembership({ url: REDIS_URL, group: name, log, ttlMs: 2_000 });
    const admin = new Redis(REDIS_URL);
    cleanups.push(async () => {
      await membership.close();
      const keys = await admin.keys(`baton:group:${name}:*`);
      if (keys.length > 0) await admin.del(...keys);
      admin.disconnect();
    });
    await membership.heartbeat({ node: 'b', address: 'http://b:8080', role: 'primary', term: 3 });
    await membership.heartbeat({ node: 'a', address: undefined, role: 'secondary', term: 3 });
    const members = await membership.list(60_000);
    expect(members.map(({ node, address, role, term }) => ({ node, address, role, term }))).toEqual([
      { node: 'a', address: undefined, role: 'secondary', term: 3 },
      { node: 'b', address: 'http://b:8080', role: 'primary', term: 3 },
    ]);
    for (const member of members)
      expect(Math.abs(member.lastSeen.getTime() - Date.now())).toBeLessThan(2_000);
    const ttl = await admin.pttl(memberKey(name, 'a'));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(2_000);

    await membership.leave('a');
    expect((await membership.list(60_000)).map((member) => member.node)).toEqual(['b']);
    expect(await admin.exists(memberKey(name, 'a'))).toBe(0);
    // Seen more than 50 ms ago: filtered out by the window, though still in the hash.
    await waitFor(async () => (await membership.list(50)).length === 0, 'b to fall out of a 50 ms window');
    expect(await membership.list(60_000)).toHaveLength(1);
  });
});
