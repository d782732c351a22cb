// The event log over a node's HTTP API: JSON requests for appends and reads, and a Server-Sent Events stream
// for following. A stream that stays silent past three heartbeats is taken for dead and ends, so that the
// client reconnects (with Last-Event-ID) instead of waiting forever on a half-open connection.
import { BackendUnavailableError, InvalidEventError, RemoteError } from '../errors.js';
import { HttpClient } from '../util/http-client.js';
import type { EventTransport, FollowQuery, ListenerLag } from './transport.js';
import type { AppendedEvent, EventCount, EventInput, EventQuery, StoredEvent } from './types.js';
import {
  countReply,
  eventInputJson,
  eventsReply,
  listenerOffsetReply,
  listenersReply,
  offsetReply,
  parseEvent,
} from './wire.js';

/** The node sends a heartbeat every 15 s; three missed ones mean the connection is gone. */
const STREAM_IDLE_MS = 45_000;

export class HttpEventTransport implements EventTransport {
  readonly target: string;
  readonly #client: HttpClient;

  /** `timeoutMs`: how long a request (not a stream) waits for the answer; default REQUEST_TIMEOUT_MS. */
  constructor(url: string, token: string | undefined, options: { timeoutMs?: number } = {}) {
    this.#client = new HttpClient(url, { token, ...options });
    this.target = this.#client.base;
  }

  async append(events: readonly EventInput[]): Promise<AppendedEvent[]> {
    const reply = await this.#client.call(eventsReply, 'POST', '/v1/events', {
      json: { events: events.map(eventInputJson) },
    });
    return reply.events;
  }

  async list(query: EventQuery): Promise<StoredEvent[]> {
    const reply = await this.#client.call(eventsReply, 'GET', `/v1/events?${searchOf(query)}`);
    return reply.events.map(({ duplicate: _ignored, ...event }) => event);
  }

  async count(query: EventQuery, upTo?: number): Promise<EventCount> {
    const { limit: _ignored, ...rest } = query;
    const search = new URLSearchParams(searchOf(rest));
    if (upTo !== undefined) search.set('cap', String(upTo));
    const reply = await this.#client.call(countReply, 'GET', `/v1/events/count?${search.toString()}`);
    // A node from before counts were capped says nothing of it: its count is exact.
    return { count: reply.count, capped: reply.capped ?? false };
  }

  async offsetAt(time: Date): Promise<number> {
    if (Number.isNaN(time.getTime())) throw new InvalidEventError('time: expected a valid date');
    const path = `/v1/events/offset-at?time=${encodeURIComponent(time.toISOString())}`;
    return (await this.#client.call(offsetReply, 'GET', path)).offset;
  }

  async latestOffset(): Promise<number> {
    return (await this.#client.call(offsetReply, 'GET', '/v1/events/head')).offset;
  }

  async listenerOffset(namespace: string, name: string): Promise<number | undefined> {
    const reply = await this.#client.call(listenerOffsetReply, 'GET', listenerPath(namespace, name));
    return reply.offset ?? undefined;
  }

  async commitListenerOffset(namespace: string, name: string, offset: number): Promise<void> {
    await this.#client.call(listenerOffsetReply, 'PUT', listenerPath(namespace, name), { json: { offset } });
  }

  async listenerLags(options: { countUpTo?: number } = {}): Promise<ListenerLag[]> {
    const path =
      options.countUpTo === undefined
        ? '/v1/events/listeners'
        : `/v1/events/listeners?count=${options.countUpTo}`;
    const { listeners } = await this.#client.call(listenersReply, 'GET', path);
    return listeners.map(({ events_behind, events_behind_capped, ...lag }) =>
      events_behind === undefined
        ? lag
        : { ...lag, eventsBehind: events_behind, eventsBehindCapped: events_behind_capped ?? false },
    );
  }

  async *follow(query: FollowQuery, signal: AbortSignal): AsyncGenerator<StoredEvent[]> {
    const idle = new AbortController();
    let idleTimer: NodeJS.Timeout | undefined;
    const touch = (): void => {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => idle.abort(), STREAM_IDLE_MS);
    };
    const search = new URLSearchParams({ from: String(query.after) });
    if (query.namespace !== undefined) search.set('namespace', query.namespace);
    for (const key of query.keys ?? []) search.append('key', key);
    try {
      touch();
      const response = await this.#client.send('GET', `/v1/events/stream?${search.toString()}`, {
        headers: { accept: 'text/event-stream', 'last-event-id': String(query.after) },
        signal: AbortSignal.any([signal, idle.signal]),
        timeoutMs: 0,
      });
      if (!response.body)
        throw new RemoteError(`the event stream of ${this.target} has no body`, 502, undefined);
      const parser = new SseParser();
      const decoder = new TextDecoder();
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        touch();
        const batch = parser.push(decoder.decode(chunk, { stream: true }));
        if (batch.length > 0) {
          // The silence that matters is the node's, not the time the caller spends on a batch.
          clearTimeout(idleTimer);
          yield batch;
          touch();
        }
        if (signal.aborted) return;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (idle.signal.aborted)
        throw new BackendUnavailableError(`the event stream of ${this.target}`, 'went silent', {
          cause: error,
        });
      throw error;
    } finally {
      clearTimeout(idleTimer);
    }
  }

  async close(): Promise<void> {}
}

/**
 * Incremental parser of a Server-Sent Events stream: text in, the events it completes out. Only `event`
 * messages (or unnamed ones) carry events; comments and `retry:` lines are skipped.
 */
export class SseParser {
  #buffer = '';
  #data: string[] = [];
  #type = '';

  push(text: string): StoredEvent[] {
    this.#buffer += text;
    const events: StoredEvent[] = [];
    let newline: number;
    while ((newline = this.#buffer.indexOf('\n')) >= 0) {
      let line = this.#buffer.slice(0, newline);
      this.#buffer = this.#buffer.slice(newline + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (this.#data.length > 0 && (this.#type === '' || this.#type === 'event')) {
          events.push(parseEvent(JSON.parse(this.#data.join('\n'))));
        }
        this.#data = [];
        this.#type = '';
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') this.#data.push(value);
      else if (field === 'event') this.#type = value;
    }
    return events;
  }
}

function listenerPath(namespace: string, name: string): string {
  return `/v1/events/listeners/${encodeURIComponent(name)}?namespace=${encodeURIComponent(namespace)}`;
}

function searchOf(query: EventQuery): string {
  const search = new URLSearchParams();
  if (query.namespace !== undefined) search.set('namespace', query.namespace);
  for (const key of query.keys ?? []) search.append('key', key);
  if (query.sender !== undefined) search.set('sender', query.sender);
  if (query.after !== undefined) search.set('from', String(query.after));
  if (query.to !== undefined) search.set('to', String(query.to));
  if (query.limit !== undefined) search.set('limit', String(query.limit));
  return search.toString();
}
