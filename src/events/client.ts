// The event client for programs and tasks: send events as an idempotent producer, read the log, and register
// listeners that get batches of events in offset order. It talks to a node over HTTP (any process, any
// host) or, in-process, to the event log of a node started in code. Listeners never stop on their own: a
// processor that throws gets the same batch again after a back-off, and a dropped stream is followed again
// from the last offset processed. A named listener stores that offset on the node after each batch, so it
// resumes there after a restart (at-least-once: a batch processed just before a crash may come again).
// Given several nodes ("http://a:8080,http://b:8080"), it sends to the one that answers and moves on to the
// next when it fails, sending the same events with the same producer ids, so none is stored twice.
import { randomUUID } from 'node:crypto';

import { BatonError, describeError, NotRunningError, RemoteError } from '../errors.js';
import { createLogger } from '../log.js';
import { backoffDelay } from '../util/backoff.js';
import { sleep } from '../util/sleep.js';
import { FailoverEventTransport, parseNodeUrls } from './failover-transport.js';
import { HttpEventTransport } from './http-transport.js';
import { EventLog } from './log.js';
import type { EventTransport } from './transport.js';
import { LocalEventTransport } from './transport.js';
import type { AppendedEvent, StoredEvent } from './types.js';
import { assertNamespace, DEFAULT_NAMESPACE, InvalidEventError } from './types.js';

/** What a listener hands its events to. Resolving acknowledges the batch; throwing gets it again later. */
export interface EventProcessor {
  process(events: readonly StoredEvent[]): void | Promise<void>;
}

export type EventProcessFn = (events: readonly StoredEvent[]) => void | Promise<void>;

/** Where a new listener starts: after the current head, after an offset (exclusive), or after a time. */
export type ListenFrom = 'latest' | number | Date;

export interface RegisterListenerOptions {
  /** Default 'latest': only events sent from now on. 0: the whole history. */
  readonly from?: ListenFrom;
  /**
   * A named listener stores its offset on the node after each processed batch and, when registered again
   * under the same name (in the same namespace), resumes after it; `from` then applies only the first time.
   */
  readonly name?: string;
}

export interface SendOptions {
  /** JSON text, or a value stored as its JSON text. Default: {"taskRun": "<id>"} inside a task run (and "execution" in a workflow's). */
  readonly context?: string | Record<string, unknown> | readonly unknown[];
}

export interface ListEventsOptions {
  /** Default: the client's namespace. */
  readonly namespace?: string;
  readonly keys?: readonly string[];
  readonly sender?: string;
  /** Exclusive: the last offset already seen. */
  readonly from?: number;
  /** Inclusive. */
  readonly to?: number;
  readonly limit?: number;
}

/** The part of a logger the client uses (a pino logger fits). */
export interface ClientLogger {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
}

export interface EventClientOptions {
  /** Namespace of sent events and of listeners. Default: BATON_NAMESPACE, else "default". */
  readonly namespace?: string;
  /** Sender stamped on sent events. */
  readonly sender?: string;
  /** Bearer token of the node's HTTP API. Default: BATON_TOKEN. */
  readonly token?: string;
  /**
   * Producer id; with `seq`, a resent event is stored once. Default: a random UUID, so only resends by this
   * client instance are recognised. Pass a stable id together with the next `initialSeq` to cover restarts.
   */
  readonly clientId?: string;
  /** First sequence number. Default 0. */
  readonly initialSeq?: number;
  /**
   * How long a send keeps retrying while no node can take it (with several nodes: going around the list,
   * with back-off between rounds). Then the send fails with the last error, which names every node and why
   * it failed. Default 30 s.
   */
  readonly sendTimeoutMs?: number;
  /**
   * How long a request waits for a node's answer before it counts as failed (and, with several nodes, moves
   * on to the next). Default 30 s with one node; 10 s with several, so that a node that hangs leaves time
   * for the others within `sendTimeoutMs`.
   */
  readonly requestTimeoutMs?: number;
  /** Back-off of a throwing processor and of reconnections. Default 100 ms doubling to 30 s. */
  readonly retry?: { readonly initialMs: number; readonly maxMs: number };
  /** Where failures are logged. Default: JSON lines on stderr. */
  readonly log?: ClientLogger;
  /** Environment for the defaults above. Default: process.env. */
  readonly env?: Record<string, string | undefined>;
}

/** A node started in this process, as far as the client needs it. */
export interface EventLogOwner {
  readonly events: EventLog | undefined;
}

/**
 * What a client connects to: a node's base URL or several, comma-separated ("http://a:8080,http://b:8080"),
 * a node or event log in this process, or a transport.
 */
export type EventTarget = string | URL | EventLogOwner | EventLog | EventTransport;

interface Listener {
  readonly id: string;
  readonly keys: readonly string[] | undefined;
  readonly name: string | undefined;
  readonly process: EventProcessFn;
  readonly controller: AbortController;
  after: number;
  done: Promise<void>;
}

const DEFAULT_RETRY = { initialMs: 100, maxMs: 30_000 } as const;
const SEND_RETRY = { initialMs: 100, maxMs: 5_000 } as const;
/** A request to one of several nodes that gets no answer within this moves on to the next node. */
const SEVERAL_NODES_REQUEST_TIMEOUT_MS = 10_000;

export class EventClient {
  readonly namespace: string;
  readonly sender: string | undefined;
  readonly clientId: string;
  readonly #target: EventLogOwner | EventLog | EventTransport | NodeUrls;
  readonly #token: string | undefined;
  readonly #taskRun: string | undefined;
  /** The workflow execution of the task run this client is in: its events reach that execution's rules. */
  readonly #execution: string | undefined;
  readonly #sendTimeoutMs: number;
  readonly #requestTimeoutMs: number | undefined;
  readonly #retry: { readonly initialMs: number; readonly maxMs: number };
  readonly #log: ClientLogger;
  readonly #listeners = new Map<string, Listener>();
  #transport: EventTransport | undefined;
  #seq: number;
  #closed = false;

  /**
   * `target`: a node's base URL, or several comma-separated (default BATON_URL), a node or event log in this
   * process, or a transport.
   */
  constructor(target?: EventTarget, options: EventClientOptions = {}) {
    const env = options.env ?? process.env;
    const resolved = target ?? env['BATON_URL'];
    if (resolved === undefined || resolved === '') {
      throw new TypeError('EventClient: give the node URL (e.g. http://127.0.0.1:8080) or set BATON_URL');
    }
    this.#target = nodeUrls(resolved, target === undefined ? 'BATON_URL' : 'EventClient');
    this.namespace = options.namespace ?? nonEmpty(env['BATON_NAMESPACE']) ?? DEFAULT_NAMESPACE;
    assertNamespace(this.namespace);
    this.sender = options.sender;
    this.#token = options.token ?? nonEmpty(env['BATON_TOKEN']);
    this.#taskRun = nonEmpty(env['BATON_TASK_RUN']);
    this.#execution = nonEmpty(env['BATON_EXECUTION']);
    this.clientId = options.clientId ?? randomUUID();
    this.#seq = options.initialSeq ?? 0;
    if (!Number.isSafeInteger(this.#seq) || this.#seq < 0) {
      throw new TypeError('EventClient: initialSeq must be an integer >= 0');
    }
    this.#sendTimeoutMs = options.sendTimeoutMs ?? 30_000;
    this.#requestTimeoutMs = options.requestTimeoutMs;
    if (this.#requestTimeoutMs !== undefined && !(this.#requestTimeoutMs > 0)) {
      throw new TypeError('EventClient: requestTimeoutMs must be a number of milliseconds > 0');
    }
    this.#retry = options.retry ?? DEFAULT_RETRY;
    this.#log = options.log ?? createLogger({ level: 'info', name: 'events-client' });
  }

  /** The next sequence number this client will use. */
  get seq(): number {
    return this.#seq;
  }

  /** Sends one event and returns it as stored, with its offset (`duplicate` when it had been stored before). */
  async sendEvent(key: string, value?: string | null, options: SendOptions = {}): Promise<AppendedEvent> {
    const [event] = await this.sendEvents([{ key, value: value ?? null, ...options }]);
    if (!event) throw new RemoteError('the node stored no event', 502, undefined);
    return event;
  }

  /** Sends events in one request (one transaction), in order. */
  async sendEvents(
    events: ReadonlyArray<{ readonly key: string; readonly value?: string | null } & SendOptions>,
  ): Promise<AppendedEvent[]> {
    this.#assertOpen();
    const inputs = events.map((event) => ({
      key: event.key,
      value: event.value ?? null,
      context: this.#context(event.context),
      namespace: this.namespace,
      sender: this.sender ?? null,
      clientId: this.clientId,
      seq: this.#seq++,
    }));
    // A resend carries the same producer ids, so an append that committed before its answer was lost is not
    // stored twice.
    const deadline = Date.now() + this.#sendTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#connection().append(inputs);
      } catch (error) {
        if (!retryable(error) || Date.now() >= deadline || this.#closed) throw error;
        await sleep(Math.min(backoffDelay(attempt, SEND_RETRY), Math.max(0, deadline - Date.now())));
      }
    }
  }

  /** Events of the client's namespace (or `namespace`), in offset order. */
  listEvents(options: ListEventsOptions = {}): Promise<StoredEvent[]> {
    return this.#connection().list(this.#query(options));
  }

  /**
   * How many events match, counted up to `upTo` (100,000 by default, so that a count costs at most that
   * many index entries read): a result equal to `upTo` means at least that many.
   */
  async countEvents(options: Omit<ListEventsOptions, 'limit'> & { upTo?: number } = {}): Promise<number> {
    const { upTo, ...query } = options;
    return (await this.#connection().count(this.#query(query), upTo)).count;
  }

  /** The offset of the last event created at or before `time` (0 when none). */
  timeToOffset(time: Date): Promise<number> {
    return this.#connection().offsetAt(time);
  }

  /** The offset of the newest event in the log. */
  latestOffset(): Promise<number> {
    return this.#connection().latestOffset();
  }

  /**
   * Calls `processor` with batches of the events of the client's namespace whose key is one of `keys` (all
   * keys when empty), in offset order, each event once unless a crash interrupts a batch. Resolves with the
   * listener's id once its starting offset is fixed: every event sent after that is delivered.
   */
  async registerListener(
    processor: EventProcessor | EventProcessFn,
    keys?: string | readonly string[],
    options: RegisterListenerOptions = {},
  ): Promise<string> {
    this.#assertOpen();
    const keyList = keys === undefined ? undefined : typeof keys === 'string' ? [keys] : [...keys];
    for (const key of keyList ?? []) {
      if (typeof key !== 'string' || key === '')
        throw new InvalidEventError('keys: expected non-empty strings');
    }
    const process: EventProcessFn =
      typeof processor === 'function' ? processor : (events) => processor.process(events);
    const transport = this.#connection();
    const stored =
      options.name === undefined ? undefined : await transport.listenerOffset(this.namespace, options.name);
    const after = stored ?? (await this.#startOffset(options.from ?? 'latest'));
    // A cheap read of the namespace: a refusal (a token limited to other namespaces) fails here, not later
    // in a listener that would retry it forever.
    await transport.list({ namespace: this.namespace, after, limit: 1 });
    const listener: Listener = {
      id: randomUUID(),
      keys: keyList && keyList.length > 0 ? keyList : undefined,
      name: options.name,
      process,
      controller: new AbortController(),
      after,
      done: Promise.resolve(),
    };
    listener.done = this.#run(listener);
    this.#listeners.set(listener.id, listener);
    return listener.id;
  }

  /** Stops a listener; resolves once its current batch (if any) is over. Unknown ids are ignored. */
  async unregisterListener(id: string): Promise<void> {
    const listener = this.#listeners.get(id);
    if (!listener) return;
    this.#listeners.delete(id);
    listener.controller.abort();
    await listener.done;
  }

  /** The last offset a listener has processed, or undefined for an unknown id. */
  listenerOffset(id: string): number | undefined {
    return this.#listeners.get(id)?.after;
  }

  /** Stops every listener. The client cannot be used afterwards. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#listeners.keys()].map((id) => this.unregisterListener(id)));
  }

  async #run(listener: Listener): Promise<void> {
    const { signal } = listener.controller;
    const transport = this.#connection();
    let failures = 0;
    while (!signal.aborted) {
      try {
        const query = { namespace: this.namespace, keys: listener.keys, after: listener.after };
        for await (const batch of transport.follow(query, signal)) {
          failures = 0;
          const fresh = batch.filter((event) => event.offset > listener.after);
          const last = fresh.at(-1);
          if (!last) continue;
          if (!(await this.#deliver(listener, fresh))) return;
          listener.after = last.offset;
          if (listener.name !== undefined) await this.#commit(listener, listener.name, last.offset);
        }
      } catch (error) {
        if (signal.aborted) return;
        this.#log.warn(
          { err: describeError(error), listener: listener.name ?? listener.id, after: listener.after },
          `event listener lost its stream from ${transport.target}; following again`,
        );
      }
      failures++;
      await sleep(backoffDelay(failures, this.#retry), signal);
    }
  }

  /** Hands a batch to the processor until it succeeds; false when the listener stopped meanwhile. */
  async #deliver(listener: Listener, events: readonly StoredEvent[]): Promise<boolean> {
    const { signal } = listener.controller;
    for (let attempt = 1; ; attempt++) {
      try {
        await listener.process(events);
        return true;
      } catch (error) {
        const delay = backoffDelay(attempt, this.#retry);
        this.#log.warn(
          {
            err: describeError(error),
            listener: listener.name ?? listener.id,
            offsets: [events[0]?.offset, events.at(-1)?.offset],
            attempt,
            retryInMs: delay,
          },
          `event processor failed (attempt ${attempt}); the same events come again in ${delay} ms`,
        );
        await sleep(delay, signal);
        if (signal.aborted) return false;
      }
    }
  }

  /** Stores a named listener's offset, retrying until it is stored or the listener stops. */
  async #commit(listener: Listener, name: string, offset: number): Promise<void> {
    const { signal } = listener.controller;
    for (let attempt = 1; !signal.aborted; attempt++) {
      try {
        await this.#connection().commitListenerOffset(this.namespace, name, offset);
        return;
      } catch (error) {
        this.#log.warn(
          { err: describeError(error), listener: name, offset, attempt },
          'could not store the offset of an event listener; retrying',
        );
        await sleep(backoffDelay(attempt, this.#retry), signal);
      }
    }
  }

  async #startOffset(from: ListenFrom): Promise<number> {
    const transport = this.#connection();
    if (from === 'latest') return transport.latestOffset();
    if (from instanceof Date) return transport.offsetAt(from);
    if (typeof from === 'number' && Number.isSafeInteger(from) && from >= 0) return from;
    throw new InvalidEventError(
      `from: expected 'latest', an offset (an integer >= 0) or a Date, got ${String(from)}`,
    );
  }

  #context(context: SendOptions['context']): string | null {
    if (context === undefined) {
      if (this.#taskRun === undefined) return null;
      return JSON.stringify(
        this.#execution === undefined
          ? { taskRun: this.#taskRun }
          : { taskRun: this.#taskRun, execution: this.#execution },
      );
    }
    return typeof context === 'string' ? context : JSON.stringify(context);
  }

  #query(options: ListEventsOptions): {
    namespace: string;
    keys?: readonly string[];
    sender?: string;
    after?: number;
    to?: number;
    limit?: number;
  } {
    return {
      namespace: options.namespace ?? this.namespace,
      ...(options.keys && options.keys.length > 0 ? { keys: options.keys } : {}),
      ...(options.sender !== undefined ? { sender: options.sender } : {}),
      ...(options.from !== undefined ? { after: options.from } : {}),
      ...(options.to !== undefined ? { to: options.to } : {}),
      ...(options.limit !== undefined ? { limit: options.limit } : {}),
    };
  }

  #connection(): EventTransport {
    this.#transport ??= this.#open();
    return this.#transport;
  }

  #open(): EventTransport {
    const target = this.#target;
    if (target instanceof NodeUrls) {
      const [only, ...others] = target.urls;
      const timeoutMs = this.#requestTimeoutMs;
      if (only !== undefined && others.length === 0) {
        return new HttpEventTransport(only, this.#token, timeoutMs === undefined ? {} : { timeoutMs });
      }
      return new FailoverEventTransport(target.urls, {
        token: this.#token,
        timeoutMs: timeoutMs ?? SEVERAL_NODES_REQUEST_TIMEOUT_MS,
        onMove: (from, to, error) =>
          this.#log.warn({ err: describeError(error), from, to }, `node ${from} failed; moving on to ${to}`),
      });
    }
    if (target instanceof EventLog) return new LocalEventTransport(target);
    if (isTransport(target)) return target;
    const events = target.events;
    if (!events) {
      throw new NotRunningError('this node has no event log: it is not running, or [events] enabled = false');
    }
    return new LocalEventTransport(events);
  }

  #assertOpen(): void {
    if (this.#closed) throw new NotRunningError('this event client is closed');
  }
}

/** The base URLs of the node or nodes a client talks to over HTTP. */
class NodeUrls {
  constructor(readonly urls: readonly string[]) {}
}

/**
 * A URL target as its list of base URLs: a text without a comma is one URL, as given; a text with commas is
 * a list of URLs, each checked (an empty or invalid entry throws, naming it).
 */
function nodeUrls(target: EventTarget, source: string): EventLogOwner | EventLog | EventTransport | NodeUrls {
  if (target instanceof URL) return new NodeUrls([String(target)]);
  if (typeof target !== 'string') return target;
  return new NodeUrls(target.includes(',') ? parseNodeUrls(target, source) : [target]);
}

function isTransport(target: EventLogOwner | EventTransport): target is EventTransport {
  return 'follow' in target && 'append' in target && 'target' in target;
}

/** Unreachable, silent and busy nodes are retried (a transient error); refusals (400, 401, 403, 404, 413) are not. */
function retryable(error: unknown): boolean {
  // The transports report an unreachable or silent node as BackendUnavailableError, a transient error.
  return error instanceof BatonError && error.transient;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

/** The event client under the name AIFlow's users know. */
export const NotificationClient = EventClient;
export type NotificationClient = EventClient;
export type NotificationClientOptions = EventClientOptions;
