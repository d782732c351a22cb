// The faults of the chaos run (bench/chaos.ts), drawn from a seeded generator so that a run can be repeated:
// kill -9 of a node (started again a few seconds later), SIGSTOP of the primary for twice the lease, a Redis
// restart, a PostgreSQL restart (pg_ctl restart -m fast), one node's PostgreSQL connections black-holed
// by its proxy for a few seconds, and a key of the Redis queue (its list, `errors-rq`, its retry set or a
// processing key) holding the wrong type for a few seconds: its value moved aside and a string or a hash put
// in its place, then put back. One fault at a time; after each, the run waits until every node is up and
// agrees on a primary, then settles. A fault that hits the primary is timed: from the injection to the
// first witness row of a newer term (see bench/chaos.ts for why the witness and not the logs).
import { Redis } from 'ioredis';

import type { PrivatePostgres, PrivateRedis } from '../test/support/private-services.js';
import type { ChaosNode, Database } from './chaos-cluster.js';
import { agreedPrimary, LEASE_MS, REDIS_KEY, unresponsive } from './chaos-cluster.js';
import type { Deadline } from './support.js';
import { pause } from './support.js';

export const FAULT_KINDS = [
  'kill',
  'pause',
  'redis-restart',
  'postgres-restart',
  'blackhole',
  'redis-key',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** One injected fault and what it did. */
export interface Fault {
  readonly index: number;
  readonly kind: FaultKind;
  readonly target: string;
  /** Epoch ms of the injection. */
  readonly at: number;
  /** The primary and term when it was injected (undefined: the group did not agree on one then). */
  readonly primaryBefore: string | undefined;
  readonly termBefore: number | undefined;
  readonly hitPrimary: boolean;
  /** Injection → first witness row of a newer term, for faults that hit the primary. */
  failoverMs: number | undefined;
  /** Injection → first witness row of any term after the fault ended (PostgreSQL restart). */
  recoveryMs: number | undefined;
  /** How long the fault lasted (the node down, paused or cut off; the server restarting). */
  durationMs: number;
  /** The group agreed on a primary again after it (undefined: not within the wait). */
  agreedAfterMs: number | undefined;
  /** Nodes up but not answering GET /v1/cluster once the fault settled. */
  unresponsive: string[];
  note: string;
}

/** A small seeded generator (mulberry32): the same seed draws the same faults, targets and gaps. */
export class Random {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A number in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [min, max]. */
  between(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  pick<T>(items: readonly T[]): T {
    const item = items[Math.floor(this.next() * items.length)];
    if (item === undefined) throw new Error('nothing to pick from');
    return item;
  }
}

export interface FaultContext {
  readonly nodes: readonly ChaosNode[];
  readonly postgres: PrivatePostgres;
  readonly redis: PrivateRedis;
  readonly db: Database;
  readonly random: Random;
  readonly deadline: Deadline;
  readonly print: (line: string) => void;
  /** The kinds drawn from (all of FAULT_KINDS unless --faults chose some). */
  readonly kinds: readonly FaultKind[];
}

/** Gap between the end of one fault's settling and the next injection, in ms. */
const GAP_MS = { min: 15_000, max: 30_000 } as const;
/** Wait after the group agrees on a primary again, before the gap starts. */
const SETTLE_MS = 3000;

/** Injects faults one at a time until `until` (epoch ms); returns them. */
export async function injectFaults(ctx: FaultContext, until: number, faults: Fault[]): Promise<void> {
  for (let index = 1; ; index++) {
    const gap = ctx.random.between(GAP_MS.min, GAP_MS.max);
    // A fault needs about 15 s to run and settle: do not start one that would run past the end.
    if (Date.now() + gap + 15_000 > until) return;
    await pause(gap, ctx.deadline.signal);
    const kind = ctx.random.pick(ctx.kinds);
    const fault = await inject(ctx, index, kind);
    faults.push(fault);
    await settle(ctx, fault);
    ctx.print(describeFault(fault));
  }
}

async function inject(ctx: FaultContext, index: number, kind: FaultKind): Promise<Fault> {
  const before = await agreedPrimary(ctx.nodes, ctx.deadline, 5000);
  const base = {
    index,
    kind,
    primaryBefore: before?.node.name,
    termBefore: before?.term,
    failoverMs: undefined,
    recoveryMs: undefined,
    agreedAfterMs: undefined,
    unresponsive: [] as string[],
    note: '',
  };
  const { random, deadline } = ctx;
  switch (kind) {
    case 'kill': {
      const node = random.pick(ctx.nodes.filter((candidate) => candidate.state === 'up'));
      const at = await node.kill();
      const failover = before?.node === node ? watchFailover(ctx, before.term, at) : undefined;
      const downMs = random.between(2000, 6000);
      await pause(downMs, deadline.signal);
      await node.start(deadline);
      const fault = { ...base, target: node.name, at, hitPrimary: before?.node === node };
      return { ...fault, durationMs: Date.now() - at, failoverMs: await failover };
    }
    case 'pause': {
      const node = before?.node ?? random.pick(ctx.nodes.filter((candidate) => candidate.state === 'up'));
      const at = node.pause();
      const failover = before?.node === node ? watchFailover(ctx, before.term, at) : undefined;
      let note = '';
      await pause(LEASE_MS + 1000, deadline.signal)
        .then(async () => (note = await blockedTakeover(ctx, before?.term)))
        .then(() => pause(LEASE_MS - 1000, deadline.signal))
        .finally(() => node.resume());
      const fault = { ...base, target: node.name, at, hitPrimary: before?.node === node, note };
      return { ...fault, durationMs: Date.now() - at, failoverMs: await failover };
    }
    case 'blackhole': {
      const up = ctx.nodes.filter((candidate) => candidate.state === 'up');
      // Half of the time the primary (a failover), else any node.
      const node = before && random.next() < 0.5 ? before.node : random.pick(up);
      const at = Date.now();
      node.proxy.blackhole();
      const failover = before?.node === node ? watchFailover(ctx, before.term, at) : undefined;
      let note = '';
      await pause(LEASE_MS + 1000, deadline.signal)
        .then(async () => (note = before?.node === node ? await blockedTakeover(ctx, before.term) : ''))
        .then(() => pause(random.between(0, 3000), deadline.signal))
        .finally(() => node.proxy.restore());
      const fault = { ...base, target: node.name, at, hitPrimary: before?.node === node, note };
      return { ...fault, durationMs: Date.now() - at, failoverMs: await failover };
    }
    case 'redis-key': {
      const { key, wrong, durationMs, note } = await flipKey(ctx);
      return {
        ...base,
        target: `${key} (a ${wrong})`,
        at: Date.now() - durationMs,
        hitPrimary: false,
        durationMs,
        note,
      };
    }
    case 'redis-restart': {
      const at = Date.now();
      await ctx.redis.restart();
      return { ...base, target: 'redis', at, hitPrimary: false, durationMs: Date.now() - at };
    }
    case 'postgres-restart': {
      const at = Date.now();
      await ctx.postgres.restart();
      const durationMs = Date.now() - at;
      const recoveryMs = await firstWitnessAfter(ctx, 'term >= 0', Date.now(), at);
      return { ...base, target: 'postgres', at, hitPrimary: false, durationMs, recoveryMs };
    }
  }
}

/**
 * The keys of queue `rq` a redis-key fault may break (a processing key twice as likely: the others are often
 * empty under this load), and where a value is put aside meanwhile.
 */
const FLIPPABLE = [REDIS_KEY, 'errors-rq', `${REDIS_KEY}:retry`, 'processing', 'processing'] as const;
const ASIDE = 'chaos-aside';

/**
 * A key of queue `rq` holds the wrong type for 3–6 s: its value is renamed aside and a string or a hash put
 * in its place in one script (no write can come between), then the wrong value is deleted and the real one
 * renamed back, also in one script. A processing key is one of the batches claimed at that moment (the list
 * when none is). The key's own type is kept out of the draw: a string where a batch (a string) is kept would
 * have to be one of the wrong shape, so a batch gets a hash.
 */
async function flipKey(
  ctx: FaultContext,
): Promise<{ key: string; wrong: string; durationMs: number; note: string }> {
  const client = new Redis(ctx.redis.url, { maxRetriesPerRequest: 3 });
  client.on('error', () => undefined);
  try {
    let key: string = ctx.random.pick(FLIPPABLE);
    if (key === 'processing') {
      const claimed = await client.keys(`${REDIS_KEY}:processing:*`);
      key = claimed.length > 0 ? ctx.random.pick(claimed) : REDIS_KEY;
    }
    const wrong = key.includes(':processing:') || ctx.random.next() < 0.5 ? 'hash' : 'string';
    const at = Date.now();
    const existed = await client.eval(
      `local existed = redis.call('EXISTS', KEYS[1])
       if existed == 1 then redis.call('RENAME', KEYS[1], KEYS[2]) end
       if ARGV[1] == 'string' then redis.call('SET', KEYS[1], 'chaos') else redis.call('HSET', KEYS[1], 'chaos', '1') end
       return existed`,
      2,
      key,
      ASIDE,
      wrong,
    );
    try {
      await pause(ctx.random.between(3000, 6000), ctx.deadline.signal);
    } finally {
      await client.eval(
        `redis.call('DEL', KEYS[1])
         if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[1]) end`,
        2,
        key,
        ASIDE,
      );
    }
    const note = Number(existed) === 1 ? 'value put back' : 'the key did not exist; deleted again';
    return { key, wrong, durationMs: Date.now() - at, note };
  } finally {
    client.disconnect();
  }
}

/**
 * When no newer term has written a witness row yet (a lease after the fault began), what the nodes'
 * sessions wait for: lock waits and the sessions that block them, as a note for the report.
 */
async function blockedTakeover(ctx: FaultContext, term: number | undefined): Promise<string> {
  if (term === undefined) return '';
  const [row] = await ctx.db.rows(
    'SELECT count(*)::int AS n FROM chaos_witness WHERE term > $1',
    [term],
    ctx.deadline,
  );
  if (Number(row?.['n']) > 0) return '';
  const waits = await ctx.db.rows(
    `SELECT w.application_name AS waiter, left(regexp_replace(w.query, '\\s+', ' ', 'g'), 70) AS waiting,
            b.application_name AS blocker, b.state AS blocker_state,
            left(regexp_replace(b.query, '\\s+', ' ', 'g'), 70) AS blocker_query
       FROM pg_stat_activity w
       JOIN pg_stat_activity b ON b.pid = ANY (pg_blocking_pids(w.pid))
      WHERE w.wait_event_type = 'Lock' AND w.query NOT LIKE '%pg_advisory_lock%'`,
    [],
    ctx.deadline,
  );
  if (waits.length === 0) return 'no newer term a lease after the fault; no lock wait seen';
  return (
    'no newer term a lease after the fault; ' +
    waits
      .map(
        (wait) =>
          `${String(wait['waiter'])} "${String(wait['waiting'])}" waits for ${String(wait['blocker'])} ` +
          `(${String(wait['blocker_state'])}, last "${String(wait['blocker_query'])}")`,
      )
      .join('; ')
  );
}

/** Injection → the first witness row of a term above `term` (ms), or undefined within 30 s. */
function watchFailover(ctx: FaultContext, term: number, at: number): Promise<number | undefined> {
  return firstWitnessAfter(ctx, `term > ${Math.trunc(term)}`, at, at);
}

/**
 * Polls the witness table for the first row matching `where` stamped at or after `after` (epoch ms), and
 * answers its time minus `from`. The database and this process read the same host clock.
 */
async function firstWitnessAfter(
  ctx: FaultContext,
  where: string,
  after: number,
  from: number,
): Promise<number | undefined> {
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    const [row] = await ctx.db.rows(
      `SELECT extract(epoch FROM min(at)) * 1000 AS ms FROM chaos_witness WHERE ${where} AND at >= to_timestamp($1 / 1000.0)`,
      [after],
      ctx.deadline,
    );
    const ms = row?.['ms'];
    if (ms !== null && ms !== undefined) return Math.round(Number(ms) - from);
    await pause(25, ctx.deadline.signal);
  }
  return undefined;
}

/** Waits until every node is up and the group agrees on a primary, then a little more. */
async function settle(ctx: FaultContext, fault: Fault): Promise<void> {
  const agreed = await agreedPrimary(ctx.nodes, ctx.deadline, 30_000);
  if (agreed) fault.agreedAfterMs = Date.now() - fault.at;
  else fault.note = 'the group did not agree on a primary within 30 s after the fault';
  fault.unresponsive = await unresponsive(ctx.nodes);
  if (fault.unresponsive.length > 0) {
    fault.note += `${fault.note ? '; ' : ''}NOT ANSWERING GET /v1/cluster: ${fault.unresponsive.join(', ')}`;
  }
  await pause(SETTLE_MS, ctx.deadline.signal);
}

export function describeFault(fault: Fault): string {
  const primary =
    fault.primaryBefore === undefined
      ? 'no agreed primary'
      : `primary ${fault.primaryBefore} (term ${fault.termBefore})`;
  const parts = [
    `fault ${fault.index}: ${fault.kind} ${fault.target}${fault.hitPrimary ? ' (the primary)' : ''}`,
    `before: ${primary}`,
    `lasted ${fault.durationMs} ms`,
  ];
  if (fault.hitPrimary) {
    parts.push(
      fault.failoverMs === undefined ? 'NO new term within 30 s' : `failover ${fault.failoverMs} ms`,
    );
  }
  if (fault.recoveryMs !== undefined) parts.push(`first witness row ${fault.recoveryMs} ms after`);
  parts.push(
    fault.agreedAfterMs === undefined ? 'group not agreed' : `agreed again after ${fault.agreedAfterMs} ms`,
  );
  if (fault.note) parts.push(fault.note);
  return `  ${parts.join('; ')}`;
}
