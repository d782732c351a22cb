// How a client reaches the event log: over a node's HTTP API, or in-process on a log this process owns (the
// embedded store of a node started in code, or a CLI command that opened the store itself). The client and
// the CLI are written against this port only; it does not retry, the client does.
import type { EventLog } from './log.js';
import type { AppendedEvent, EventCount, EventInput, EventQuery, ListenerLag, StoredEvent } from './types.js';

export type { ListenerLag } from './types.js';

/** What to follow: one namespace (or all when absent), some keys (or all), after an offset (exclusive). */
export interface FollowQuery {
  readonly namespace?: string | undefined;
  readonly keys?: readonly string[] | undefined;
  readonly after: number;
}

export interface EventTransport {
  /** Where the log is, for messages: a URL or "in-process". */
  readonly target: string;
  append(events: readonly EventInput[]): Promise<AppendedEvent[]>;
  list(query: EventQuery): Promise<StoredEvent[]>;
  /** Counts matching events up to `upTo` (default: the log's DEFAULT_COUNT_CAP). */
  count(query: EventQuery, upTo?: number): Promise<EventCount>;
  /** The offset of the last event created at or before `time` (0 when none). */
  offsetAt(time: Date): Promise<number>;
  /** The highest committed offset. */
  latestOffset(): Promise<number>;
  listenerOffset(namespace: string, name: string): Promise<number | undefined>;
  commitListenerOffset(namespace: string, name: string, offset: number): Promise<void>;
  /**
   * The named listeners and how many offsets each is behind the head; with `countUpTo`, also the events of
   * its namespace it has yet to commit, counted up to that many.
   */
  listenerLags(options?: { countUpTo?: number }): Promise<ListenerLag[]>;
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

  count(query: EventQuery, upTo?: number): Promise<EventCount> {
    return this.#log.count(query, upTo);
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

  listenerLags(options: { countUpTo?: number } = {}): Promise<ListenerLag[]> {
    return this.#log.listenerLags(options);
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
