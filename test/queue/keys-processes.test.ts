// Ordered queues (ordering = "key") across node processes killed with kill -9: three nodes of one group, on
// one PostgreSQL store and the machine's Redis, consume a store queue and a Redis queue while records are
// published through the nodes' HTTP APIs (Baton-Key headers and envelope lines, spread over the nodes) and
// LPUSHed raw to the Redis list (keyed by the handler's key() in the nodes). Some records fail and are
// retried. The nodes are killed one at a time, while they hold batches, and started again. At the end each
// key's records are in the sink exactly once and in publish order: its seqs, by row id, read 0..n-1.
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import type { SharedServices } from '../support/claims.js';
import { claimsHeld, nodeToml, openSharedServices } from '../support/claims.js';
import type { BatonNodeProcess } from '../support/process.js';
import { cleanupAll, startBatonNode, tempProject } from '../support/process.js';
import type { TestRedis } from '../support/redis.js';
import { tomlString, waitFor } from '../tasks/support.js';

const HANDLER = fileURLToPath(new URL('../fixtures/keyed-handler.ts', import.meta.url));
const NODES = 3;
/** Keys per queue, and records per key. */
const KEYS = 30;
const SEQS = 60;
/** Seqs of every key published per round; a round's requests run at once (their keys are disjoint). */
const SEQS_PER_ROUND = 5;
const ROUNDS = SEQS / SEQS_PER_ROUND;
const ROUND_PAUSE_MS = 400;
/** The handler sleeps this long per record, so that batches are in flight when a node dies. */
const HANDLER_DELAY_MS = 15;
/** Node i is killed once ROUNDS_PER_KILL × (i + 1) rounds are published: the kills span the publishing. */
const KILLS = 3;
const ROUNDS_PER_KILL = 3;
const STORE_QUEUE = 'sq';

let services: SharedServices | undefined;
let publisher: Publisher | undefined;
afterEach(async () => {
  // The publisher stops first and the nodes (with their process groups) go next: nothing writes to Redis
  // after its cleanup.
  publisher?.stop();
  await cleanupAll();
  await publisher?.done.catch(() => undefined);
  publisher = undefined;
  await services?.close();
  services = undefined;
});

type Side = 's' | 'r';
/** Key `k` of a queue (`s` the store queue, `r` the Redis queue). */
const keyName = (side: Side, k: number): string => `${side}${k}`;
/** Record `seq` of key `k`, as the handler reads it: every seventh seq of even keys fails. */
const record = (side: Side, k: number, seq: number): string =>
  `${keyName(side, k)}:${seq}${k % 2 === 0 && seq % 7 === 3 ? ':fail' : ''}`;
const range = (count: number): number[] => Array.from({ length: count }, (_, index) => index);

interface Row {
  key: string;
  seq: number;
  pid: number;
}

interface QueueView {
  name: string;
  depth: number;
  in_flight: number;
  errors: number;
}

/** A node killed: its pid, and the claims it still held once dead (store rows, Redis batches). */
interface Kill {
  node: string;
  pid: number;
  storeClaims: number;
  redisBatches: number;
}

/** The node processes of the group, by slot: the current one of each, and every one started. */
interface Group {
  readonly names: readonly string[];
  readonly nodes: BatonNodeProcess[];
  readonly started: BatonNodeProcess[];
  /** The node name of each process started, by pid. */
  readonly nameOf: ReadonlyMap<number, string>;
  start(slot: number): Promise<BatonNodeProcess>;
}

async function startGroup(services: SharedServices, redisQueue: string): Promise<Group> {
  const testRedis = services.redis;
  // Names under the Redis prefix, so that its cleanup finds every key: the list and its error queue by the
  // queue's name, the consumers' keys by the node's.
  const names = range(NODES).map((index) => `${testRedis.prefix}-n${index + 1}`);
  const queue = (name: string, backend: string): string =>
    `[queues.${tomlString(name)}]\nhandler = ${tomlString(HANDLER)}\nbackend = "${backend}"\nordering = "key"\n` +
    // Attempts to spare: a record alone in its batch fails 8 runs in each process it meets (the fixture).
    `batch_size = 20\nconcurrency = 3\nmax_attempts = 100\nretry_delay_ms = 50\nretry_max_delay_ms = 200\n`;
  const configs: string[] = [];
  for (const name of names) {
    const project = await tempProject({
      toml:
        (await nodeToml(services, name)) +
        `[group]\nname = "g"\nelector = "postgres"\nlease_ms = 2000\nrenew_deadline_ms = 1200\nheartbeat_ms = 200\n` +
        queue(STORE_QUEUE, 'store') +
        queue(redisQueue, 'redis'),
    });
    configs.push(project.configPath);
  }
  const env = { KEYED_HANDLER_DELAY_MS: String(HANDLER_DELAY_MS) };
  const started: BatonNodeProcess[] = [];
  const nameOf = new Map<number, string>();
  const start = async (slot: number): Promise<BatonNodeProcess> => {
    const node = await startBatonNode(configs[slot] ?? '', { env, readyTimeoutMs: 60_000 });
    started.push(node);
    nameOf.set(node.pid, names[slot] ?? '');
    return node;
  };
  const nodes = await Promise.all(range(NODES).map(start));
  return { names, nodes, started, nameOf, start };
}

interface Publisher {
  /** Rounds published so far. */
  readonly rounds: number;
  /** Resolves once every round is published (rejects if a request fails). */
  readonly done: Promise<void>;
  /** Sends no more request to the node of `slot`, and resolves once it answered those it has. */
  avoid(slot: number): Promise<void>;
  use(slot: number): void;
  stop(): void;
}

/**
 * Publishes every key's records in seq order, in ROUNDS rounds. Store queue: keys 0..14 as envelope lines,
 * five keys mixed in each request; the others by Baton-Key. Redis queue: keys 0..14 LPUSHed raw (keyed by
 * key() in the nodes), keys mixed; the others through the nodes by Baton-Key. A key of the Redis queue takes
 * one path only: records pushed raw and records published with a key are ordered apart. Requests go to the
 * nodes in turn, and each is answered before the next round (202: its records are stored).
 */
function publish(group: Group, testRedis: TestRedis, redisQueue: string): Publisher {
  const accepting = new Set(range(NODES));
  const pending = range(NODES).map(() => new Set<Promise<unknown>>());
  let turn = 0;
  let rounds = 0;
  let stopped = false;
  const post = async (queue: string, lines: readonly string[], headers: Record<string, string>) => {
    const slots = [...accepting];
    const slot = slots[turn++ % slots.length] ?? 0;
    const sent = fetch(`${group.nodes[slot]?.url}/v1/queues/${queue}/records`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson', ...headers },
      body: lines.join('\n'),
      signal: AbortSignal.timeout(30_000),
    });
    pending[slot]?.add(sent);
    try {
      const response = await sent;
      const text = await response.text();
      if (response.status !== 202) throw new Error(`ingest answered ${response.status}: ${text}`);
    } finally {
      pending[slot]?.delete(sent);
    }
  };
  const round = (seqs: readonly number[]): Array<Promise<unknown>> => {
    const requests: Array<Promise<unknown>> = [];
    for (let first = 0; first < 15; first += 5) {
      const lines = seqs.flatMap((seq) =>
        range(5).map((index) =>
          JSON.stringify({ record: record('s', first + index, seq), key: keyName('s', first + index) }),
        ),
      );
      requests.push(post(STORE_QUEUE, lines, { 'baton-envelope': 'json' }));
    }
    const raw = seqs.flatMap((seq) => range(15).map((k) => record('r', k, seq)));
    // LPUSH a b c leaves c at the left: the consumers take from the right, a first.
    requests.push(testRedis.client.lpush(redisQueue, ...raw));
    for (let k = 15; k < KEYS; k++) {
      const lines = (side: Side): string[] => seqs.map((seq) => record(side, k, seq));
      requests.push(post(STORE_QUEUE, lines('s'), { 'baton-key': keyName('s', k) }));
      requests.push(post(redisQueue, lines('r'), { 'baton-key': keyName('r', k) }));
    }
    return requests;
  };
  const done = (async () => {
    for (let index = 0; index < ROUNDS && !stopped; index++) {
      await Promise.all(round(range(SEQS_PER_ROUND).map((step) => index * SEQS_PER_ROUND + step)));
      rounds = index + 1;
      await new Promise((resolve) => setTimeout(resolve, ROUND_PAUSE_MS));
    }
  })();
  done.catch(() => undefined); // awaited by the test
  return {
    get rounds() {
      return rounds;
    },
    done,
    async avoid(slot) {
      accepting.delete(slot);
      await Promise.allSettled([...(pending[slot] ?? [])]);
    },
    use: (slot) => void accepting.add(slot),
    stop: () => void (stopped = true),
  };
}

describe('ordered queues across node processes killed with kill -9', () => {
  it('keeps each key in publish order, exactly once, on a store queue and a Redis queue', async () => {
    const shared = await openSharedServices();
    services = shared;
    const { redis: testRedis, pool: query, count } = shared;
    const rows = async (): Promise<Row[]> =>
      (await query.query<Row>('SELECT key, seq, pid FROM keyed_events ORDER BY id')).rows;

    const redisQueue = testRedis.queue();
    const group = await startGroup(shared, redisQueue);
    const node = (slot: number): BatonNodeProcess => group.nodes[slot] as BatonNodeProcess;
    const feed = publish(group, testRedis, redisQueue);
    publisher = feed;

    /** Claims a node's process holds: store rows and Redis batches of its consumer `<name>:<pid>:…`. */
    const claimsOf = (slot: number, pid: number): Promise<{ store: number; redis: number }> =>
      claimsHeld(shared, `${group.names[slot]}:${pid}:`, redisQueue);
    const kills: Kill[] = [];
    for (let index = 0; index < KILLS; index++) {
      const slot = index % NODES;
      const victim = node(slot);
      // Once it has stored records of its own and holds batches of both queues (if it gets there in time:
      // the assertions below want that of some kill, not of each).
      await waitFor(
        async () => {
          if (feed.rounds < Math.min(ROUNDS, ROUNDS_PER_KILL * (index + 1))) return undefined;
          const stored = await count('SELECT count(*)::int AS n FROM keyed_events WHERE pid = $1', [
            victim.pid,
          ]);
          const claims = await claimsOf(slot, victim.pid);
          return stored > 0 && claims.store > 0 && claims.redis > 0;
        },
        30_000,
        `${group.names[slot]} storing records and holding batches`,
      ).catch(() => undefined);
      await feed.avoid(slot);
      const exit = await victim.stop('SIGKILL');
      expect(exit.signal).toBe('SIGKILL');
      expect(() => process.kill(victim.pid, 0)).toThrow(/ESRCH/);
      const held = await claimsOf(slot, victim.pid);
      kills.push({
        node: group.names[slot] ?? '',
        pid: victim.pid,
        storeClaims: held.store,
        redisBatches: held.redis,
      });
      group.nodes[slot] = await group.start(slot);
      feed.use(slot);
    }
    await feed.done;

    const total = 2 * KEYS * SEQS;
    const queues = async (): Promise<QueueView[]> => {
      const response = await fetch(`${node(0).url}/v1/queues`, { signal: AbortSignal.timeout(10_000) });
      return ((await response.json()) as { queues: QueueView[] }).queues;
    };
    const idle = async (): Promise<QueueView[] | undefined> => {
      const views = await queues().catch(() => []);
      const empty = views.length === 2 && views.every((view) => view.depth === 0 && view.in_flight === 0);
      return empty ? views : undefined;
    };
    const diagnose = async (): Promise<string> => {
      const behind = [...byKey(await rows())]
        .filter(([, seqs]) => seqs.length !== SEQS)
        .map(([key, seqs]) => `${key}: ${seqs.length} rows, the last ${seqs.slice(-3).join(', ')}`);
      const logs = group.started.map(
        (each) => `--- log of ${each.pid} (end)\n${each.stderr.split('\n').slice(-15).join('\n')}`,
      );
      const views = await queues().catch(String);
      return [`kills: ${JSON.stringify(kills)}`, `queues: ${JSON.stringify(views)}`, ...behind, ...logs].join(
        '\n',
      );
    };
    // Every record stored, or the queues idle with records in an error queue (named below).
    await waitFor(
      async () =>
        (await count('SELECT count(*)::int AS n FROM keyed_events')) >= total ||
        ((await idle())?.some((view) => view.errors > 0) ?? false),
      120_000,
      'every record stored',
    ).catch(async (error: unknown) => {
      throw new Error(`${String(error)}\n${await diagnose()}`);
    });
    // Nothing left in flight that could add a row.
    await waitFor(idle, 60_000, 'both queues empty');

    for (const name of [STORE_QUEUE, redisQueue]) {
      const response = await fetch(`${node(0).url}/v1/queues/${name}/errors`);
      const { errors } = (await response.json()) as {
        errors: Array<{ payload_text?: string; error: string; attempts: number }>;
      };
      expect(
        errors.map((error) => `${error.payload_text}: ${error.error} (${error.attempts} attempts)`),
        `the error queue of ${name}`,
      ).toEqual([]);
    }

    const stored = await rows();
    const order = byKey(stored);
    for (const side of ['s', 'r'] as const) {
      for (const k of range(KEYS)) {
        const key = keyName(side, k);
        expect(order.get(key), `the seqs of key ${key}, in the order stored`).toEqual(range(SEQS));
      }
      const ran = stored.filter((row) => row.key.startsWith(side));
      const nodes = new Set(ran.map((row) => group.nameOf.get(row.pid)));
      expect(nodes.size, `nodes that stored records of the ${side} keys`).toBeGreaterThan(1);
    }
    expect(stored).toHaveLength(total);

    // Records marked :fail did fail (the nodes log failed attempts), on both queues.
    const failed = new Set<string>();
    for (const each of group.started) {
      for (const [, text] of each.stderr.matchAll(/record ([rs]\d+:\d+):fail fails/g)) failed.add(text ?? '');
    }
    for (const side of ['s', 'r']) {
      expect(
        [...failed].filter((text) => text.startsWith(side)).length,
        `failed ${side} records`,
      ).toBeGreaterThan(0);
    }
    // Kills landed while the node held batches: still claimed once its pid was gone.
    expect(
      kills.some((kill) => kill.storeClaims > 0),
      JSON.stringify(kills),
    ).toBe(true);
    expect(
      kills.some((kill) => kill.redisBatches > 0),
      JSON.stringify(kills),
    ).toBe(true);
  }, 240_000);
});

/** The seqs of each key in the order the handler stored them. */
function byKey(rows: readonly Row[]): Map<string, number[]> {
  const found = new Map<string, number[]>();
  for (const { key, seq } of rows) found.set(key, [...(found.get(key) ?? []), Number(seq)]);
  return found;
}
