// The load of the chaos run (bench/chaos.ts): producers of records (raw LPUSH to Redis; NDJSON over HTTP to
// a node that is up), producers of events (NotificationClient, idempotent), and two named listeners, each
// keeping what it was given so that the end of the run can compare it with the log. Every producer knows,
// for each record or event, whether it was acknowledged or its fate is unknown (the request failed midway).
import { Redis } from 'ioredis';

import { NotificationClient } from '../src/events/client.js';
import type { ClientLogger } from '../src/events/client.js';
import { HttpEventTransport } from '../src/events/http-transport.js';
import type { EventTransport, FollowQuery, ListenerLag } from '../src/events/transport.js';
import type { AppendedEvent, EventCount, EventInput, EventQuery, StoredEvent } from '../src/events/types.js';
import type { ChaosNode } from './chaos-cluster.js';
import {
  CHAIN_NAMESPACE,
  EVENTS_NAMESPACE,
  REDIS_KEY,
  WORKFLOW_NAMESPACE,
  WORKFLOW_START_KEY,
} from './chaos-cluster.js';

/** A request to a node that takes longer than this is abandoned, and the next node is tried. */
export const CALL_TIMEOUT_MS = 5000;
/** How long a record producer over HTTP leaves a node alone after a failed request. */
const AVOID_MS = 10_000;

/**
 * The event transport of the run's clients: a node's HTTP API, moving on to the next node when a request
 * fails, times out or a stream ends, as a client given the addresses of the whole group would.
 */
export class FailoverTransport implements EventTransport {
  readonly #transports: HttpEventTransport[];
  #index: number;

  constructor(urls: readonly string[], first = 0) {
    this.#transports = urls.map((url) => new HttpEventTransport(url, undefined));
    this.#index = first % urls.length;
  }

  get target(): string {
    return this.#current().target;
  }

  append(events: readonly EventInput[]): Promise<AppendedEvent[]> {
    return this.#call((transport) => transport.append(events));
  }

  list(query: EventQuery): Promise<StoredEvent[]> {
    return this.#call((transport) => transport.list(query));
  }

  count(query: EventQuery, upTo?: number): Promise<EventCount> {
    return this.#call((transport) => transport.count(query, upTo));
  }

  offsetAt(time: Date): Promise<number> {
    return this.#call((transport) => transport.offsetAt(time));
  }

  latestOffset(): Promise<number> {
    return this.#call((transport) => transport.latestOffset());
  }

  listenerOffset(namespace: string, name: string): Promise<number | undefined> {
    return this.#call((transport) => transport.listenerOffset(namespace, name));
  }

  commitListenerOffset(namespace: string, name: string, offset: number): Promise<void> {
    return this.#call((transport) => transport.commitListenerOffset(namespace, name, offset));
  }

  listenerLags(options: { countUpTo?: number } = {}): Promise<ListenerLag[]> {
    return this.#call((transport) => transport.listenerLags(options));
  }

  async *follow(query: FollowQuery, signal: AbortSignal): AsyncGenerator<StoredEvent[]> {
    const transport = this.#current();
    try {
      yield* transport.follow(query, signal);
    } catch (error) {
      this.#rotate(transport);
      throw error;
    }
    // A stream that ended (its node stopping) is followed again on the next node.
    if (!signal.aborted) this.#rotate(transport);
  }

  async close(): Promise<void> {}

  #current(): HttpEventTransport {
    const transport = this.#transports[this.#index];
    if (!transport) throw new Error('no node to send events to');
    return transport;
  }

  #rotate(failed: HttpEventTransport): void {
    if (this.#current() === failed) this.#index = (this.#index + 1) % this.#transports.length;
  }

  async #call<T>(fn: (transport: HttpEventTransport) => Promise<T>): Promise<T> {
    const transport = this.#current();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        const error = new Error(`${transport.target} did not answer within ${CALL_TIMEOUT_MS} ms`);
        error.name = 'TimeoutError';
        reject(error);
      }, CALL_TIMEOUT_MS);
    });
    try {
      return await Promise.race([fn(transport), timeout]);
    } catch (error) {
      this.#rotate(transport);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Counts the clients' warnings instead of printing them: they are expected under faults. */
export class QuietLog implements ClientLogger {
  warnings = 0;
  last = '';

  info(): void {}

  warn(_object: object, message: string): void {
    this.warnings++;
    this.last = message;
  }
}

/** What a producer knows of its records or events: acknowledged, or unknown (may be stored 0 or 1 times). */
export interface Outcomes {
  readonly acked: string[];
  readonly unknown: string[];
}

/** A loop that does one step every `everyMs` until stopped, and lets its last step finish. */
abstract class Ticker {
  readonly outcomes: Outcomes = { acked: [], unknown: [] };
  readonly #everyMs: number;
  #stopped = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  constructor(everyMs: number) {
    this.#everyMs = everyMs;
  }

  start(): void {
    this.#loop = this.#run();
  }

  /** Stops the loop and waits for its step in flight. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
  }

  protected abstract step(): Promise<void>;

  async #run(): Promise<void> {
    while (!this.#stopped) {
      const started = Date.now();
      await this.step();
      const wait = Math.max(0, this.#everyMs - (Date.now() - started));
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}

/**
 * Pushes ids "r0", "r1"… to the Redis list of queue `rq` as Azafea's producers do, `perStep` per step. A
 * chunk is pushed by a script that first sets a marker of its own: ioredis sends a command again after a
 * reconnection (Redis restarting), and the marker makes that resend a no-op, so the producer itself never
 * pushes a record twice and a duplicate in the sink can only come from the consumers.
 */
export class RedisProducer extends Ticker {
  readonly #redis: Redis;
  readonly #perStep: number;
  #next = 0;

  constructor(url: string, perStep: number, everyMs: number) {
    super(everyMs);
    this.#redis = new Redis(url, { retryStrategy: () => 200, maxRetriesPerRequest: null });
    this.#redis.on('error', () => undefined);
    this.#perStep = perStep;
  }

  protected async step(): Promise<void> {
    const ids = Array.from({ length: this.#perStep }, (_, index) => `r${this.#next + index}`);
    const marker = `chaos-produced:${this.#next}`;
    this.#next += ids.length;
    try {
      await this.#redis.eval(
        "if redis.call('SETNX', KEYS[2], 1) == 1 then return redis.call('LPUSH', KEYS[1], unpack(ARGV)) end return 0",
        2,
        REDIS_KEY,
        marker,
        ...ids,
      );
      this.outcomes.acked.push(...ids);
    } catch {
      this.outcomes.unknown.push(...ids);
    }
  }

  override async stop(): Promise<void> {
    await super.stop();
    this.#redis.disconnect();
  }
}

/** Delayed records: each gets a run_at from 0 to `maxMs` ahead, drawn from `random` (a number in [0, 1)). */
export interface Delays {
  readonly maxMs: number;
  readonly random: () => number;
}

/**
 * Posts ids ("p0", "p1"… by default) as NDJSON to a queue of a node that is up (nodes in turn, queues in turn,
 * leaving a node that failed a request alone for 10 s). A 202 acknowledges them; any other outcome (an error
 * status, a dropped connection, no answer within 5 s) leaves them unknown: they are never sent again, since a
 * second send could store them twice. With `delays`, the body is envelopes (`Baton-Envelope: json`), each
 * line with its own `run_at`, and each record is "<id> <run_at>", so that the sink notes when it was due.
 */
export class StoreProducer extends Ticker {
  readonly #targets: NodeTargets;
  readonly #perStep: number;
  readonly #prefix: string;
  readonly #queues: readonly string[];
  readonly #delays: Delays | undefined;
  #next = 0;
  #turn = 0;

  constructor(
    nodes: readonly ChaosNode[],
    perStep: number,
    everyMs: number,
    options: { prefix?: string; queues?: readonly string[]; delays?: Delays } = {},
  ) {
    super(everyMs);
    this.#targets = new NodeTargets(nodes);
    this.#perStep = perStep;
    this.#prefix = options.prefix ?? 'p';
    this.#queues = options.queues ?? ['pq'];
    this.#delays = options.delays;
  }

  protected async step(): Promise<void> {
    const node = this.#targets.next();
    if (!node) return;
    const queue = this.#queues[this.#turn++ % this.#queues.length] ?? 'pq';
    const ids = Array.from({ length: this.#perStep }, (_, index) => `${this.#prefix}${this.#next + index}`);
    this.#next += ids.length;
    const headers: Record<string, string> = {};
    let lines = ids;
    const delays = this.#delays;
    if (delays) {
      headers['baton-envelope'] = 'json';
      lines = ids.map((id) => {
        const runAt = new Date(Date.now() + Math.floor(delays.random() * (delays.maxMs + 1))).toISOString();
        return JSON.stringify({ record: `${id} ${runAt}`, run_at: runAt });
      });
    }
    const status = await postRecords(node, queue, lines, headers);
    if (status === '202') this.outcomes.acked.push(...ids);
    else {
      this.outcomes.unknown.push(...ids);
      this.#targets.failed(node);
    }
  }
}

/**
 * POSTs NDJSON `lines` to `queue` on `node`; resolves the answer's status ("202"), or why there was none: no
 * answer within `timeoutMs`, or the connection's error code (refused, reset…).
 */
export function postRecords(
  node: ChaosNode,
  queue: string,
  lines: readonly string[],
  headers: Readonly<Record<string, string>>,
  timeoutMs = CALL_TIMEOUT_MS,
): Promise<string> {
  return fetch(`${node.url}/v1/queues/${queue}/records`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-ndjson', ...headers },
    body: lines.join('\n'),
    signal: AbortSignal.timeout(timeoutMs),
  }).then(
    async (response) => {
      await response.arrayBuffer();
      return String(response.status);
    },
    (error: unknown) => {
      if (!(error instanceof Error)) return String(error);
      if (error.name === 'TimeoutError') return `no answer in ${timeoutMs} ms`;
      const cause: unknown = error.cause;
      return cause instanceof Error && 'code' in cause ? String(cause.code) : error.name;
    },
  );
}

/**
 * The node a record producer over HTTP sends its next request to: the nodes that are up in turn, leaving one
 * that failed a request alone for 10 s, as a client given the addresses of the whole group would.
 */
export class NodeTargets {
  readonly #nodes: readonly ChaosNode[];
  readonly #failedAt = new Map<string, number>();
  #turn = 0;

  constructor(nodes: readonly ChaosNode[]) {
    this.#nodes = nodes;
  }

  /** The next node to send to; undefined when every node is down or was left alone. */
  next(): ChaosNode | undefined {
    const up = this.#nodes.filter(
      (node) => node.state === 'up' && (this.#failedAt.get(node.name) ?? 0) < Date.now() - AVOID_MS,
    );
    return up[this.#turn++ % Math.max(1, up.length)];
  }

  failed(node: ChaosNode): void {
    this.#failedAt.set(node.name, Date.now());
  }
}

/**
 * Sends one event per step through a NotificationClient (idempotent: a resend after a lost answer is
 * stored once), its value unique ("e17"), cycling through `keys`. An event whose send threw is unknown.
 */
export class EventProducer extends Ticker {
  readonly client: NotificationClient;
  readonly log = new QuietLog();
  readonly #keys: readonly string[];
  readonly #prefix: string;
  /** Acknowledged events: value → offset. */
  readonly offsets = new Map<string, number>();
  #next = 0;

  constructor(options: {
    urls: readonly string[];
    namespace: string;
    keys: readonly string[];
    prefix: string;
    everyMs: number;
  }) {
    super(options.everyMs);
    this.client = new NotificationClient(new FailoverTransport(options.urls), {
      namespace: options.namespace,
      sender: 'chaos',
      sendTimeoutMs: 20_000,
      log: this.log,
    });
    this.#keys = options.keys;
    this.#prefix = options.prefix;
  }

  protected async step(): Promise<void> {
    const key = this.#keys[this.#next % this.#keys.length] ?? 'tick';
    const value = `${this.#prefix}${this.#next++}`;
    try {
      const event = await this.client.sendEvent(key, value);
      this.outcomes.acked.push(value);
      this.offsets.set(value, event.offset);
    } catch {
      this.outcomes.unknown.push(value);
    }
  }

  override async stop(): Promise<void> {
    await super.stop();
    await this.client.close();
  }
}

export function tickProducer(urls: readonly string[], everyMs: number): EventProducer {
  return new EventProducer({
    urls,
    namespace: EVENTS_NAMESPACE,
    keys: ['tick.a', 'tick.b'],
    prefix: 'e',
    everyMs,
  });
}

export function chainProducer(urls: readonly string[], everyMs: number): EventProducer {
  return new EventProducer({
    urls,
    namespace: CHAIN_NAMESPACE,
    keys: ['chain.start'],
    prefix: 'c',
    everyMs,
  });
}

/** The events that trigger the workflow, with unique values "f0", "f1"…. */
export function flowProducer(urls: readonly string[], everyMs: number): EventProducer {
  return new EventProducer({
    urls,
    namespace: WORKFLOW_NAMESPACE,
    keys: [WORKFLOW_START_KEY],
    prefix: 'f',
    everyMs,
  });
}

/**
 * A named listener of the run. It notes each offset it is given and in which registration. A listener is
 * at-least-once: registered again under its name (as after a restart of its process), it resumes after the
 * offset stored on the node, so the offsets after that stored offset that it had already processed may come
 * again (allowed). Offsets at or before the stored offset, or given twice within one registration, are
 * repeats the contract does not allow.
 */
export class ChaosListener {
  readonly name: string;
  readonly keys: readonly string[];
  readonly log = new QuietLog();
  /** The offset it started after, the first time. */
  startedAfter = 0;
  /** Offset → the registration (0, 1, …) in which it was first given. */
  readonly #firstSeen = new Map<number, number>();
  /** For each registration, the offset stored on the node just before it (undefined: none yet). */
  readonly #storedAtRegistration: Array<number | undefined> = [];
  readonly #urls: readonly string[];
  #client: NotificationClient | undefined;
  #id: string | undefined;
  #clients = 0;
  repeatedWrong = 0;
  redeliveredAllowed = 0;
  /** Examples of repeats that are not allowed, for the report. */
  readonly wrongExamples: string[] = [];
  maxSeen = 0;

  constructor(name: string, keys: readonly string[], urls: readonly string[]) {
    this.name = name;
    this.keys = keys;
    this.#urls = urls;
  }

  get registrations(): number {
    return this.#storedAtRegistration.length;
  }

  get seen(): ReadonlySet<number> {
    return new Set(this.#firstSeen.keys());
  }

  /** Registers (again) under its name, on a new client that starts with another node than the last one. */
  async register(): Promise<void> {
    const client = new NotificationClient(new FailoverTransport(this.#urls, this.#clients++), {
      namespace: EVENTS_NAMESPACE,
      retry: { initialMs: 100, maxMs: 2000 },
      log: this.log,
    });
    const stored = await retry(() =>
      new FailoverTransport(this.#urls).listenerOffset(EVENTS_NAMESPACE, this.name),
    );
    const registration = this.#storedAtRegistration.length;
    this.#storedAtRegistration.push(stored);
    this.#id = await retry(() =>
      client.registerListener((events) => this.#take(events, registration), this.keys, {
        from: 'latest',
        name: this.name,
      }),
    );
    if (registration === 0) this.startedAfter = client.listenerOffset(this.#id) ?? 0;
    this.#client = client;
  }

  /** Unregisters (its offset stays stored on the node) and registers again: a restart of the listener. */
  async reregister(): Promise<void> {
    await this.close();
    await this.register();
  }

  async close(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    if (client && this.#id !== undefined) await client.unregisterListener(this.#id);
    await client?.close();
  }

  #take(events: readonly StoredEvent[], registration: number): void {
    for (const event of events) {
      this.maxSeen = Math.max(this.maxSeen, event.offset);
      const first = this.#firstSeen.get(event.offset);
      if (first === undefined) {
        this.#firstSeen.set(event.offset, registration);
        continue;
      }
      const stored = this.#storedAtRegistration[registration];
      const allowed = first < registration && (stored === undefined || event.offset > stored);
      if (allowed) {
        this.redeliveredAllowed++;
        continue;
      }
      this.repeatedWrong++;
      if (this.wrongExamples.length < 5) {
        this.wrongExamples.push(
          `offset ${event.offset} first in registration ${first}, again in ${registration} (stored ${String(stored)})`,
        );
      }
    }
  }
}

/** Calls `fn` until it resolves, at most 60 times a second apart. */
async function retry<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (attempt >= 60) throw error;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}
