// The ordered queues of the chaos run (bench/chaos.ts): keyed records published through the nodes, each key's
// one request after the other, with idempotency ids, sent again after a failed request and, for a share of
// them, after their acknowledgement too; then the checks of what the handler stored: each key's records in
// publish order, none stored twice, every acknowledged one stored, and every resend counted as deduplicated.
import { setMaxListeners } from 'node:events';

import { Redis } from 'ioredis';

import { HttpAdmin } from '../src/admin/http-admin.js';
import type { ChaosNode, Database } from './chaos-cluster.js';
import { KEYED_REDIS_KEY, KEYED_REDIS_QUEUE, KEYED_STORE_QUEUE } from './chaos-cluster.js';
import type { Random } from './chaos-faults.js';
import { CALL_TIMEOUT_MS, NodeTargets, postRecords } from './chaos-load.js';
import type { Deadline } from './support.js';

export const KEYED_QUEUES = [KEYED_STORE_QUEUE, KEYED_REDIS_QUEUE] as const;
/** Keys of each ordered queue; each key's records are published in one sequential stream. */
const KEYS_PER_QUEUE = 16;
/** A key's next request is sent this long after its last one ended (ms). */
const GAP_MS = { min: 500, max: 2500 } as const;
const MAX_RECORDS_PER_REQUEST = 3;
/**
 * Share of records that fail every run for a second after they are sent (bench/chaos-fixtures/
 * keyed-sink-handler.ts): three or four attempts with the queues' back-off, their key held back meanwhile.
 */
const FAIL_SHARE = 0.03;
const FAIL_FOR_MS = 1000;
/**
 * After an acknowledged request: the share of them sent again at once, and of the others the share after
 * which one of the key's earlier requests is sent again.
 */
const RESEND_NOW_SHARE = 0.1;
const RESEND_EARLIER_SHARE = 0.05;
/** Pause before a request is sent again after a failure (to the next node). */
const RETRY_PAUSE_MS = 200;
/**
 * Share of requests abandoned on their first attempt after 5–150 ms, as by a client whose timeout is too
 * short, and sent again at once to the next node: the first may be stored all the same, or still be on its
 * way, and then the resend must be dropped.
 */
const ABANDON_SHARE = 0.05;
const ABANDON_MS = { min: 5, max: 150 } as const;

/**
 * How a key's requests reach a node: NDJSON with `Baton-Key` and `Idempotency-Key` (record n of several gets
 * `<id>#n`), envelope lines each with its key and id, or the HTTP admin client (`publish(q, records, { key,
 * ids })`).
 */
type Method = 'header' | 'envelope' | 'admin';
const METHODS: readonly Method[] = ['header', 'envelope', 'admin'];

interface KeyedRequest {
  readonly seqs: readonly number[];
  /** The idempotency id of each record, as the node sees it. */
  readonly ids: readonly string[];
  /** Each record: "<key> <seq> <id>", and for one that fails at first, the time until which it does. */
  readonly records: readonly string[];
}

/** One key of one queue: its stream's requests and what became of their records. */
class KeyStream {
  readonly queue: string;
  readonly key: string;
  readonly method: Method;
  /** Seqs in the order their publish was first acknowledged (the key's publish order). */
  readonly acked: number[] = [];
  /** Seqs of the request that had no acknowledgement when the load stopped: stored once or not at all. */
  readonly unknown: number[] = [];
  /** Acknowledged requests, to send again. */
  readonly done: KeyedRequest[] = [];
  next = 0;

  constructor(queue: string, key: string, method: Method) {
    this.queue = queue;
    this.key = key;
    this.method = method;
  }

  get name(): string {
    return `${this.queue} ${this.key}`;
  }

  /** The id of the record at `index` of a request whose first record is `first`, of `count` records. */
  idOf(first: number, index: number, count: number): string {
    const base = `${this.queue}.${this.key}.${first}`;
    // Idempotency-Key gives record n of several `<id>#n` (src/http/ingest-body.ts); the others one id each.
    if (this.method === 'header') return count === 1 ? base : `${base}#${index + 1}`;
    return `${this.queue}.${this.key}.${first + index}`;
  }
}

/** What the keyed load did, beside each stream's outcomes. */
export interface KeyedCounts {
  requests: number;
  /**
   * Records sent again after a failed attempt (an error status, a dropped connection, no answer in 5 s) or an
   * abandoned one.
   */
  retried: number;
  /** Records of acknowledged requests sent again on purpose, and of those, how many were answered 202. */
  resent: number;
  resentAnswered: number;
  /** Answers of failed attempts (status or error name, or "abandoned") → count. */
  readonly failures: Map<string, number>;
}

/**
 * The keyed load: KEYS_PER_QUEUE keys on each ordered queue, each key a stream that publishes 1–3 records
 * with increasing seqs, waits for the acknowledgement (sending the same request again, with the same ids, to
 * the next node until one comes), then 0.5–2.5 s, then the next. A key's publish order is thus its seq order.
 */
export class KeyedLoad {
  readonly streams: KeyStream[];
  readonly counts: KeyedCounts = {
    requests: 0,
    retried: 0,
    resent: 0,
    resentAnswered: 0,
    failures: new Map(),
  };
  readonly #targets: NodeTargets;
  readonly #admins = new Map<string, HttpAdmin>();
  readonly #random: Random;
  readonly #stop = new AbortController();
  #loops: Promise<void>[] = [];

  constructor(nodes: readonly ChaosNode[], random: Random) {
    this.#targets = new NodeTargets(nodes);
    this.#random = random;
    for (const node of nodes)
      this.#admins.set(node.name, new HttpAdmin(node.url, { timeoutMs: CALL_TIMEOUT_MS }));
    this.streams = KEYED_QUEUES.flatMap((queue) =>
      Array.from(
        { length: KEYS_PER_QUEUE },
        (_, index) => new KeyStream(queue, `k${index}`, METHODS[index % METHODS.length] ?? 'header'),
      ),
    );
    // Each stream waits on the stop signal.
    setMaxListeners(this.streams.length + 1, this.#stop.signal);
  }

  start(): void {
    this.#loops = this.streams.map((stream) => this.#run(stream));
  }

  /** Stops the streams; a request without an acknowledgement by then leaves its records unknown. */
  async stop(): Promise<void> {
    this.#stop.abort();
    await Promise.all(this.#loops);
  }

  get published(): number {
    return this.streams.reduce((sum, stream) => sum + stream.acked.length, 0);
  }

  get unknown(): number {
    return this.streams.reduce((sum, stream) => sum + stream.unknown.length, 0);
  }

  async #run(stream: KeyStream): Promise<void> {
    while (await this.#sleep(this.#random.between(GAP_MS.min, GAP_MS.max))) {
      const request = this.#nextRequest(stream);
      if (!(await this.#publish(stream, request))) {
        stream.unknown.push(...request.seqs);
        return;
      }
      stream.acked.push(...request.seqs);
      stream.done.push(request);
      // A resend of an acknowledged request, at once or later (a producer replaying what it sent): each of
      // its records must be dropped as a duplicate.
      const again =
        this.#random.next() < RESEND_NOW_SHARE
          ? request
          : this.#random.next() < RESEND_EARLIER_SHARE
            ? this.#random.pick(stream.done)
            : undefined;
      if (again) {
        const node = this.#targets.next();
        this.counts.resent += again.records.length;
        if (node && (await this.#send(stream, again, node)) === 'acknowledged')
          this.counts.resentAnswered += again.records.length;
      }
    }
  }

  #nextRequest(stream: KeyStream): KeyedRequest {
    const count = this.#random.between(1, MAX_RECORDS_PER_REQUEST);
    const first = stream.next;
    stream.next += count;
    const seqs = Array.from({ length: count }, (_, index) => first + index);
    const ids = seqs.map((_, index) => stream.idOf(first, index, count));
    const records = seqs.map((seq, index) => {
      const fail = this.#random.next() < FAIL_SHARE ? ` ${Date.now() + FAIL_FOR_MS}` : '';
      return `${stream.key} ${seq} ${ids[index] ?? ''}${fail}`;
    });
    return { seqs, ids, records };
  }

  /** Sends `request` until a node acknowledges it (true), or the load stops first (false). */
  async #publish(stream: KeyStream, request: KeyedRequest): Promise<boolean> {
    this.counts.requests++;
    let sentBefore = false;
    let abandonMs =
      this.#random.next() < ABANDON_SHARE ? this.#random.between(ABANDON_MS.min, ABANDON_MS.max) : undefined;
    for (;;) {
      const node = this.#targets.next();
      if (node) {
        if (sentBefore) this.counts.retried += request.records.length;
        sentBefore = true;
        const answer = await this.#send(stream, request, node, abandonMs);
        abandonMs = undefined;
        if (answer === 'acknowledged') return true;
        // Not the node's fault: sent again at once.
        if (answer === 'abandoned') continue;
        this.#targets.failed(node);
      }
      if (!(await this.#sleep(RETRY_PAUSE_MS))) return false;
    }
  }

  /** One attempt, given up after `abandonMs` when set. */
  async #send(
    stream: KeyStream,
    request: KeyedRequest,
    node: ChaosNode,
    abandonMs?: number,
  ): Promise<'acknowledged' | 'abandoned' | 'failed'> {
    const started = performance.now();
    const answer = await this.#attempt(stream, request, node, abandonMs ?? CALL_TIMEOUT_MS);
    if (answer === '202') return 'acknowledged';
    // A timer may fire a millisecond early by this clock.
    const gaveUp = abandonMs !== undefined && performance.now() - started >= abandonMs - 2;
    const why = gaveUp ? 'abandoned' : answer;
    this.counts.failures.set(why, (this.counts.failures.get(why) ?? 0) + 1);
    return why === 'abandoned' ? why : 'failed';
  }

  /** Sends `request` to `node` by the stream's path: "202", or the status or error of a failure. */
  #attempt(stream: KeyStream, request: KeyedRequest, node: ChaosNode, timeoutMs: number): Promise<string> {
    if (stream.method === 'admin') {
      const admin =
        timeoutMs === CALL_TIMEOUT_MS ? this.#admins.get(node.name) : new HttpAdmin(node.url, { timeoutMs });
      if (!admin) return Promise.resolve('no admin client');
      const records = request.records.map((record) => Buffer.from(record));
      return admin.publish(stream.queue, records, { key: stream.key, ids: request.ids }).then(
        () => '202',
        (error: unknown) => (error instanceof Error ? error.name : String(error)),
      );
    }
    const headers: Record<string, string> = {};
    let lines = request.records;
    if (stream.method === 'header') {
      headers['baton-key'] = stream.key;
      headers['idempotency-key'] = stream.idOf(request.seqs[0] ?? 0, 0, 1);
    } else {
      headers['baton-envelope'] = 'json';
      lines = request.records.map((record, index) =>
        JSON.stringify({ record, key: stream.key, id: request.ids[index] }),
      );
    }
    return postRecords(node, stream.queue, lines, headers, timeoutMs);
  }

  /** Resolves true after `ms`, or false at once when the load stops. */
  #sleep(ms: number): Promise<boolean> {
    const signal = this.#stop.signal;
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', abort);
        resolve(true);
      }, ms);
      const abort = (): void => {
        clearTimeout(timer);
        resolve(false);
      };
      signal.addEventListener('abort', abort, { once: true });
    });
  }
}

/**
 * What keeps the ordered queues from being drained: acknowledged keyed records not stored yet, and records
 * still in the Redis queue's keys (the store queue's records are in the run's own wait for the queues).
 */
export async function keyedWaiting(
  db: Database,
  redisUrl: string,
  load: KeyedLoad,
  deadline: Deadline,
): Promise<string[]> {
  const acked = load.streams.flatMap((stream) =>
    stream.acked.map((seq) => ({ queue: stream.queue, key: stream.key, seq })),
  );
  const [row] = await db.rows(
    `SELECT count(*)::int AS n FROM unnest($1::text[], $2::text[], $3::int[]) AS a (queue, key, seq)
      WHERE EXISTS (SELECT 1 FROM chaos_keyed_sink s
                     WHERE (s.queue, s.key, s.seq) = (a.queue, a.key, a.seq))`,
    [acked.map((a) => a.queue), acked.map((a) => a.key), acked.map((a) => a.seq)],
    deadline,
  );
  const waiting: string[] = [];
  const stored = Number(row?.['n'] ?? 0);
  if (stored < acked.length) waiting.push(`keyed records (${stored} of ${acked.length} stored)`);
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  try {
    const listed = await redis.llen(KEYED_REDIS_KEY).catch(() => -1);
    const held = await redis.keys(`${KEYED_REDIS_KEY}:key:*`).catch(() => ['?']);
    const claimed = await redis.keys(`${KEYED_REDIS_KEY}:processing:*`).catch(() => ['?']);
    if (listed !== 0 || held.length > 0 || claimed.length > 0) {
      waiting.push(
        `${KEYED_REDIS_QUEUE} to be empty (${KEYED_REDIS_KEY} ${listed}, key lists ${held.length}, ` +
          `processing ${claimed.length})`,
      );
    }
  } finally {
    redis.disconnect();
  }
  return waiting;
}

export interface KeyedCheck {
  /**
   * Acknowledged records, and records whose request had no acknowledgement when the load stopped (with how
   * many of those were stored).
   */
  readonly published: number;
  readonly unknown: number;
  readonly unknownStored: number;
  readonly rows: number;
  /** Records (first rows) stored after a record of their key with a higher seq, i.e. published later. */
  readonly outOfOrder: number;
  /** Rows beyond the first of one (queue, key, seq): every resend carried its record's id. */
  readonly duplicated: number;
  /** Acknowledged records not stored, with where each still is. */
  readonly missing: number;
  readonly stillQueued: Record<string, number>;
  /** Rows of a record never sent. */
  readonly neverSent: number;
  /** Records dropped as duplicates by the nodes (/v1/queues, both queues); undefined: no node answered. */
  readonly deduplicated: number | undefined;
  /** Resent records answered 202 that the nodes' count of deduplicated records falls short of. */
  readonly uncounted: number;
  readonly counts: KeyedCounts;
  readonly examples: string[];
}

/** The sink's rows, in the order they were committed, against each key's publish order. */
export async function checkKeyed(
  db: Database,
  redisUrl: string,
  nodes: readonly ChaosNode[],
  load: KeyedLoad,
  deadline: Deadline,
): Promise<KeyedCheck> {
  const examples: string[] = [];
  const note = (text: string): void => void (examples.length < 10 && examples.push(text));
  const rows = await db.rows('SELECT queue, key, seq FROM chaos_keyed_sink ORDER BY row', [], deadline);
  const stored = new Map<string, number[]>();
  for (const row of rows) {
    const name = `${String(row['queue'])} ${String(row['key'])}`;
    stored.set(name, [...(stored.get(name) ?? []), Number(row['seq'])]);
  }
  let outOfOrder = 0;
  let duplicated = 0;
  let neverSent = 0;
  let unknownStored = 0;
  const missing: Array<{ stream: KeyStream; seq: number }> = [];
  for (const stream of load.streams) {
    const seqs = stored.get(stream.name) ?? [];
    stored.delete(stream.name);
    const acked = new Set(stream.acked);
    const unknown = new Set(stream.unknown);
    const times = new Map<number, number>();
    let highest = -1;
    for (const seq of seqs) {
      const n = (times.get(seq) ?? 0) + 1;
      times.set(seq, n);
      if (n === 2) note(`${stream.name}: seq ${seq} stored more than once`);
      if (n > 1) {
        duplicated++;
        continue;
      }
      if (seq < highest) {
        outOfOrder++;
        note(`${stream.name}: seq ${seq} stored after seq ${highest}`);
      }
      highest = Math.max(highest, seq);
      if (unknown.has(seq)) unknownStored++;
      else if (!acked.has(seq)) {
        neverSent++;
        note(`${stream.name}: seq ${seq} stored, never sent`);
      }
    }
    for (const seq of stream.acked) if (!times.has(seq)) missing.push({ stream, seq });
  }
  for (const [name, seqs] of stored) {
    neverSent += seqs.length;
    note(`${name}: ${seqs.length} rows of a key the load never used`);
  }
  const places = await locateKeyed(db, redisUrl, deadline);
  const stillQueued: Record<string, number> = {};
  for (const { stream, seq } of missing) {
    // A record is "<key> <seq> <id>", and every id starts with "<queue>.".
    const text = `${stream.key} ${seq} ${stream.queue}.`;
    const place =
      places.find(([, found]) => found.some((record) => record.includes(text)))?.[0] ??
      'nowhere in the queues';
    stillQueued[place] = (stillQueued[place] ?? 0) + 1;
    note(`${stream.name}: seq ${seq} acknowledged, not stored (${place})`);
  }
  const deduplicated = await deduplicatedByNodes(nodes);
  const uncounted = deduplicated === undefined ? 0 : Math.max(0, load.counts.resentAnswered - deduplicated);
  if (uncounted > 0) {
    note(
      `${load.counts.resentAnswered} resent records answered 202, ${deduplicated} counted as deduplicated`,
    );
  }
  return {
    published: load.published,
    unknown: load.unknown,
    unknownStored,
    rows: rows.length,
    outOfOrder,
    duplicated,
    missing: missing.length,
    stillQueued,
    neverSent,
    deduplicated,
    uncounted,
    counts: load.counts,
    examples,
  };
}

/**
 * The records still in the ordered queues, by place: the store queue's waiting and claimed rows and its error
 * queue; each key of the Redis queue (its list, key lists, claims, retries, its error list) read as text.
 */
async function locateKeyed(
  db: Database,
  redisUrl: string,
  deadline: Deadline,
): Promise<Array<[string, string[]]>> {
  const rows = await db.rows(
    `SELECT convert_from(payload, 'UTF8') AS record,
            CASE WHEN claimed_by IS NULL THEN 'waiting' ELSE 'claimed by ' || claimed_by END AS place
       FROM baton_queue_records WHERE queue = $1
     UNION ALL SELECT convert_from(payload, 'UTF8'), 'in the error queue'
       FROM baton_queue_errors WHERE queue = $1`,
    [KEYED_STORE_QUEUE],
    deadline,
  );
  const places = new Map<string, string[]>();
  const add = (place: string, records: readonly string[]): void =>
    void places.set(place, [...(places.get(place) ?? []), ...records]);
  for (const row of rows) add(`${KEYED_STORE_QUEUE}: ${String(row['place'])}`, [String(row['record'])]);
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  try {
    // The keys that remember idempotency ids hold no record.
    const keys = (await redis.keys(`${KEYED_REDIS_KEY}*`)).filter((key) => !key.includes(':dedup:'));
    for (const key of [...keys, `errors-${KEYED_REDIS_QUEUE}`]) {
      const type = await redis.type(key);
      const values =
        type === 'list'
          ? await redis.lrange(key, 0, -1)
          : type === 'zset'
            ? await redis.zrange(key, 0, -1)
            : type === 'hash'
              ? await redis.hvals(key)
              : type === 'string'
                ? [(await redis.getBuffer(key))?.toString('latin1') ?? '']
                : [];
      add(`${KEYED_REDIS_QUEUE}: in ${key}`, values);
    }
  } catch (error) {
    add(`Redis could not be read: ${String(error)}`, []);
  } finally {
    redis.disconnect();
  }
  return [...places];
}

/** The sum of the ordered queues' `deduplicated` on GET /v1/queues, from the first node that answers. */
async function deduplicatedByNodes(nodes: readonly ChaosNode[]): Promise<number | undefined> {
  for (const node of nodes.filter((candidate) => candidate.state === 'up')) {
    try {
      const queues = await new HttpAdmin(node.url, { timeoutMs: CALL_TIMEOUT_MS }).queues();
      return queues
        .filter((queue) => KEYED_QUEUES.some((name) => name === queue.name))
        .reduce((sum, queue) => sum + (queue.deduplicated ?? 0), 0);
    } catch {
      // The next node.
    }
  }
  return undefined;
}

/** The report's lines on the ordered queues. */
export function describeKeyed(check: KeyedCheck): string[] {
  const { counts } = check;
  const failures = [...counts.failures].map(([why, n]) => `${why} ${n}`).join(', ') || 'none';
  return [
    `ordered queues (${KEYED_QUEUES.join(', ')}, ${KEYS_PER_QUEUE} keys each): ${check.published} records ` +
      `published (acknowledged) in ${counts.requests} requests, ${check.rows} rows stored; ${check.unknown} ` +
      `unknown (no acknowledgement when the load stopped), of which ${check.unknownStored} stored once. Sent ` +
      `again: ${counts.retried} records after a failed or abandoned attempt (${failures}), ${counts.resent} ` +
      `after their acknowledgement (${counts.resentAnswered} answered 202); deduplicated by the nodes ` +
      `${check.deduplicated ?? 'unknown (no node answered)'}. Out of order ${check.outOfOrder}, stored twice ` +
      `${check.duplicated}, missing ${check.missing}, stored but never sent ${check.neverSent}, resends not ` +
      `counted as deduplicated ${check.uncounted}`,
    ...Object.entries(check.stillQueued).map(([place, n]) => `  missing records ${place}: ${n}`),
    ...check.examples.map((example) => `  ${example}`),
  ];
}

/** The fields of the closing JSON line. */
export function keyedSummary(check: KeyedCheck | undefined): {
  keyed_records: number;
  keyed_unknown: number;
  keyed_retried: number;
  keyed_resent: number;
  deduplicated: number | null;
  keyed_out_of_order: number;
  dedup_duplicated: number;
  keyed_missing: number;
  keyed_never_sent: number;
  dedup_uncounted: number;
} {
  return {
    keyed_records: check?.published ?? 0,
    keyed_unknown: check?.unknown ?? 0,
    keyed_retried: check?.counts.retried ?? 0,
    keyed_resent: check?.counts.resent ?? 0,
    deduplicated: check?.deduplicated ?? null,
    keyed_out_of_order: check?.outOfOrder ?? 0,
    dedup_duplicated: check?.duplicated ?? 0,
    keyed_missing: check?.missing ?? 0,
    keyed_never_sent: check?.neverSent ?? 0,
    dedup_uncounted: check?.uncounted ?? 0,
  };
}
