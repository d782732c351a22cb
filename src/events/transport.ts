// How a client reaches the event log: over a node's HTTP API, or in-process on a log this process owns (the
// embedded store of a node started in code, or a CLI command that opened the store itself). The client and
// the CLI are written against this port only; it does not retry, the client does.
import type { EventLog } from './log.js';
import type { AppendedEvent, EventInput, EventQuery, StoredEvent } from './types.js';

/** What to follow: one namespace (or all when absent), some keys (or all), after an offset (exclusive). */
export interface FollowQuery {
  readonly namespace?: string | undefined;
  readonly keys?: readonly string[] | undefined;
  readonly after: number;
}

export interface ListenerLag {
  readonly namespace: string;
  readonly name: string;
  readonly lag: number;
}

export interface EventTransport {
  /** Where the log is, for messages: a URL or "in-process". */
  readonly target: string;
  append(events: readonly EventInput[]): Promise<AppendedEvent[]>;
  list(query: EventQuery): Promise<StoredEvent[]>;
  count(query: EventQuery): Promise<number>;
  /** The offset of the last event created at or before `time` (0 when none). */
  offsetAt(time: Date): Promise<number>;
  /** The highest committed offset. */
  latestOffset(): Promise<number>;
  listenerOffset(namespace: string, name: string): Promise<number | undefined>;
  commitListenerOffset(namespace: string, name: string, offset: number): Promise<void>;
  /** The named listeners and how many events of their namespace each has yet to commit. */
  listenerLags(): Promise<ListenerLag[]>;
  /**
   * Batches of matching events in offset order as they commit, until `signal` aborts. Ends or throws when
   * the connection drops; the caller follows again from the last offset it handled.
   */
  follow(query: FollowQuery, signal: AbortSignal): AsyncIterable<StoredEvent[]>;
  close(): Promise<void>;
}

/** The transport of a log in this process. Closing it leaves the log open: its owner closes it. */
export class LocalEventTransport implements EventTransport {
  readonly target = 'in-process';
  readonly #log: EventLog;

  constructor(log: EventLog) {
    this.#log = log;
  }

  append(events: readonly EventInput[]): Promise<AppendedEvent[]> {
    return this.#log.append(events);
  }

  list(query: EventQuery): Promise<StoredEvent[]> {
    return this.#log.list(query);
  }

  count(query: EventQuery): Promise<number> {
    return this.#log.count(query);
  }

  offsetAt(time: Date): Promise<number> {
    return this.#log.offsetAt(time);
  }

  latestOffset(): Promise<number> {
    return this.#log.latestOffset();
  }

  listenerOffset(namespace: string, name: string): Promise<number | undefined> {
    return this.#log.listenerOffset(namespace, name);
  }

  commitListenerOffset(namespace: string, name: string, offset: number): Promise<void> {
    return this.#log.commitListenerOffset(namespace, name, offset);
  }

  listenerLags(): Promise<ListenerLag[]> {
    return this.#log.listenerLags();
  }

  follow(query: FollowQuery, signal: AbortSignal): AsyncIterable<StoredEvent[]> {
    return this.#log.follow(
      { after: query.after, namespace: query.namespace, keys: query.keys, limit: FOLLOW_BATCH },
      signal,
    );
  }

  async close(): Promise<void> {}
}

/** Events handed to a listener at most per batch. */
export const FOLLOW_BATCH = 1_000;
