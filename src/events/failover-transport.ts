// The event log over several nodes of a group ("http://a:8080,http://b:8080"): each request goes to the
// current node and, when that node cannot take it (unreachable, silent, 5xx, 429), on to the next ones in
// turn, once around the list; the node that answers becomes the current one. A refusal (4xx) is final: any
// node would refuse the same request. Sending an append again to another node is safe because the client's
// events carry producer ids (clientId + seq): a copy stored before the failure is not stored twice. Like
// every transport, it does not wait and go around again: the client does, within its deadline.
import { BackendUnavailableError, BatonError, RemoteError } from '../errors.js';
import { HttpEventTransport } from './http-transport.js';
import type { EventTransport, FollowQuery, ListenerLag } from './transport.js';
import type { AppendedEvent, EventCount, EventInput, EventQuery, StoredEvent } from './types.js';

/**
 * The base URLs of a comma-separated list, trimmed. Throws a TypeError naming the list's `source` and the
 * entry when one is empty or not an http(s) URL.
 */
export function parseNodeUrls(list: string, source: string): string[] {
  const entries = list.split(',').map((entry) => entry.trim());
  return entries.map((entry, index) => {
    const where = `${source}: entry ${index + 1} of ${entries.length}`;
    if (entry === '') throw new TypeError(`${where} is empty ("${list}")`);
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      throw new TypeError(`${where}, "${entry}", is not a URL (expected e.g. http://127.0.0.1:8080)`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new TypeError(`${where}, "${entry}", is not an http:// or https:// URL`);
    }
    return entry;
  });
}

/**
 * True when another node may take a request that failed with `error`: the node could not be reached or
 * did not answer in time, answered 5xx (502, 503, 504 included: a node stopping, a store down, a node
 * that cannot take writes) or 429, or its success answer was cut short. False for refusals (400, 401,
 * 403, 404, 409, 413, …) and for anything that is not a node's answer.
 */
export function movesOn(error: unknown): boolean {
  if (!(error instanceof BatonError)) return false;
  if (error instanceof RemoteError && error.status < 300) return true;
  return error.transient || error.status >= 500;
}

export interface FailoverOptions {
  readonly token?: string | undefined;
  /** How long a request waits for a node's answer before it moves on (streams excepted). */
  readonly timeoutMs?: number | undefined;
  /** Told each time a request or a stream leaves a node for the next one. */
  readonly onMove?: (from: string, to: string, error: unknown) => void;
}

export class FailoverEventTransport implements EventTransport {
  /** Every node, comma-separated, for messages. */
  readonly target: string;
  readonly #nodes: readonly HttpEventTransport[];
  readonly #onMove: FailoverOptions['onMove'];
  #current = 0;

  constructor(urls: readonly string[], options: FailoverOptions = {}) {
    if (urls.length === 0) throw new TypeError('FailoverEventTransport: give at least one node URL');
    const http = options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs };
    this.#nodes = urls.map((url) => new HttpEventTransport(url, options.token, http));
    this.target = this.#nodes.map((node) => node.target).join(',');
    this.#onMove = options.onMove;
  }

  /** The node that requests go to now. */
  get current(): string {
    return this.#node(this.#current).target;
  }

  append(events: readonly EventInput[]): Promise<AppendedEvent[]> {
    return this.#call((node) => node.append(events));
  }

  list(query: EventQuery): Promise<StoredEvent[]> {
    return this.#call((node) => node.list(query));
  }

  count(query: EventQuery, upTo?: number): Promise<EventCount> {
    return this.#call((node) => node.count(query, upTo));
  }

  offsetAt(time: Date): Promise<number> {
    return this.#call((node) => node.offsetAt(time));
  }

  latestOffset(): Promise<number> {
    return this.#call((node) => node.latestOffset());
  }

  listenerOffset(namespace: string, name: string): Promise<number | undefined> {
    return this.#call((node) => node.listenerOffset(namespace, name));
  }

  commitListenerOffset(namespace: string, name: string, offset: number): Promise<void> {
    return this.#call((node) => node.commitListenerOffset(namespace, name, offset));
  }

  listenerLags(options: { countUpTo?: number } = {}): Promise<ListenerLag[]> {
    return this.#call((node) => node.listenerLags(options));
  }

  /** Follows the current node; when its stream breaks or ends, the next follow goes to the next node. */
  async *follow(query: FollowQuery, signal: AbortSignal): AsyncGenerator<StoredEvent[]> {
    const index = this.#current;
    try {
      yield* this.#node(index).follow(query, signal);
    } catch (error) {
      if (!signal.aborted) this.#moveOn(index, error);
      throw error;
    }
    if (!signal.aborted) this.#moveOn(index, new Error('the event stream ended'));
  }

  async close(): Promise<void> {}

  /** Tries `request` on each node once, from the current one, until one answers or refuses it. */
  async #call<T>(request: (node: HttpEventTransport) => Promise<T>): Promise<T> {
    const start = this.#current;
    const reasons: string[] = [];
    for (let tried = 0; tried < this.#nodes.length; tried++) {
      const index = (start + tried) % this.#nodes.length;
      const node = this.#node(index);
      try {
        return await request(node);
      } catch (error) {
        if (!movesOn(error)) throw error;
        reasons.push(`${node.target}: ${reasonOf(error, node.target)}`);
        this.#moveOn(index, error);
      }
    }
    throw new BackendUnavailableError(
      `the nodes ${this.target}`,
      `none took the request (${reasons.join('; ')})`,
    );
  }

  /** Leaves node `index` for the next one, unless another request left it already. */
  #moveOn(index: number, error: unknown): void {
    if (this.#nodes.length === 1 || this.#current !== index) return;
    this.#current = (index + 1) % this.#nodes.length;
    this.#onMove?.(this.#node(index).target, this.#node(this.#current).target, error);
  }

  #node(index: number): HttpEventTransport {
    const node = this.#nodes[index];
    if (!node) throw new RangeError(`no node ${index}`);
    return node;
  }
}

/** The error's message without the "the node at <url>: " that the HTTP client puts first. */
function reasonOf(error: unknown, target: string): string {
  const message = error instanceof Error ? error.message : String(error);
  const prefix = `the node at ${target}: `;
  return message.startsWith(prefix) ? message.slice(prefix.length) : message;
}
