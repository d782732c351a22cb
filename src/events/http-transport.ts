// The event log over a node's HTTP API: JSON requests for appends and reads, and a Server-Sent Events stream
// for following. A stream that stays silent past three heartbeats is taken for dead and ends, so that the
// client reconnects (with Last-Event-ID) instead of waiting forever on a half-open connection.
import { InvalidEventError } from './types.js';
import type { AppendedEvent, EventInput, EventQuery, StoredEvent } from './types.js';
import type { EventTransport, FollowQuery, ListenerLag } from './transport.js';
import { parseAppendedEvent, parseEvent } from './wire.js';

/** The node sends a heartbeat every 15 s; three missed ones mean the connection is gone. */
const STREAM_IDLE_MS = 45_000;
/** A plain request that takes longer than this is abandoned (and retried by the client). */
const REQUEST_TIMEOUT_MS = 30_000;

/** A node answered a request with an error status. */
export class EventRequestError extends Error {
  override readonly name = 'EventRequestError';
  readonly status: number;
  readonly code: string | undefined;

  constructor(status: number, code: string | undefined, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** Worth sending again (the same request, deduplicated by the producer id): the node is busy or stopping. */
  get transient(): boolean {
    return this.status === 502 || this.status === 503 || this.status === 504 || this.status === 429;
  }
}

export class HttpEventTransport implements EventTransport {
  readonly target: string;
  readonly #base: string;
  readonly #token: string | undefined;

  constructor(url: string, token: string | undefined) {
    this.#base = url.replace(/\/+$/, '');
    this.target = this.#base;
    this.#token = token;
  }

  async append(events: readonly EventInput[]): Promise<AppendedEvent[]> {
    const reply = await this.#request('POST', '/v1/events', { events });
    return asArray(reply['events']).map(parseAppendedEvent);
  }

  async list(query: EventQuery): Promise<StoredEvent[]> {
    const reply = await this.#request('GET', `/v1/events?${searchOf(query)}`);
    return asArray(reply['events']).map(parseEvent);
  }

  async count(query: EventQuery): Promise<number> {
    const { limit: _ignored, ...rest } = query;
    const reply = await this.#request('GET', `/v1/events/count?${searchOf(rest)}`);
    return Number(reply['count']);
  }

  async offsetAt(time: Date): Promise<number> {
    if (Number.isNaN(time.getTime())) throw new InvalidEventError('time: expected a valid date');
    const reply = await this.#request(
      'GET',
      `/v1/events/offset-at?time=${encodeURIComponent(time.toISOString())}`,
    );
    return Number(reply['offset']);
  }

  async latestOffset(): Promise<number> {
    const reply = await this.#request('GET', '/v1/events/head');
    return Number(reply['offset']);
  }

  async listenerOffset(namespace: string, name: string): Promise<number | undefined> {
    const reply = await this.#request('GET', listenerPath(namespace, name));
    return typeof reply['offset'] === 'number' ? reply['offset'] : undefined;
  }

  async commitListenerOffset(namespace: string, name: string, offset: number): Promise<void> {
    await this.#request('PUT', listenerPath(namespace, name), { offset });
  }

  async listenerLags(): Promise<ListenerLag[]> {
    const reply = await this.#request('GET', '/v1/events/listeners');
    const listeners = Array.isArray(reply['listeners']) ? (reply['listeners'] as unknown[]) : [];
    return listeners.flatMap((entry) => {
      const row = entry as Record<string, unknown>;
      return typeof row['namespace'] === 'string' && typeof row['name'] === 'string'
        ? [{ namespace: row['namespace'], name: row['name'], lag: Number(row['lag']) }]
        : [];
    });
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
      const response = await fetch(`${this.#base}/v1/events/stream?${search.toString()}`, {
        headers: { ...this.#headers(), accept: 'text/event-stream', 'last-event-id': String(query.after) },
        signal: AbortSignal.any([signal, idle.signal]),
      });
      if (!response.ok || !response.body) throw await errorOf(response, this.#base);
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
        throw new Error(`the event stream of ${this.#base} went silent`, { cause: error });
      throw error;
    } finally {
      clearTimeout(idleTimer);
    }
  }

  async close(): Promise<void> {}

  #headers(): Record<string, string> {
    return this.#token ? { authorization: `Bearer ${this.#token}` } : {};
  }

  async #request(method: string, path: string, json?: unknown): Promise<Record<string, unknown>> {
    const headers = this.#headers();
    if (json !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(this.#base + path, {
      method,
      headers,
      ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    if (!response.ok) throw await errorOf(response, this.#base);
    const reply: unknown = await response.json();
    if (typeof reply !== 'object' || reply === null) {
      throw new Error(`${method} ${path}: the node at ${this.#base} answered something else than JSON`);
    }
    return reply as Record<string, unknown>;
  }
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

async function errorOf(response: Response, base: string): Promise<Error> {
  const reply: unknown = await response.json().catch(() => ({}));
  const body = typeof reply === 'object' && reply !== null ? (reply as Record<string, unknown>) : {};
  const message = typeof body['error'] === 'string' ? body['error'] : response.statusText;
  const code = typeof body['code'] === 'string' ? body['code'] : undefined;
  if (response.status === 400 && code === 'INVALID_EVENT') return new InvalidEventError(message);
  return new EventRequestError(
    response.status,
    code,
    `the node at ${base} answered ${response.status}: ${message}`,
  );
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}
