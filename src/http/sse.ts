// Server-Sent Events over fastify replies: the headers, `id:`/`event:`/`data:` frames, a comment every 15 s
// so that proxies keep the connection open, backpressure for slow readers, limits of open streams per
// client address and in all, and an end for every open stream when the server closes (an open stream would
// otherwise hold the node's shutdown, and its client should reconnect, maybe to another node).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { NotRunningError, TooManyRequestsError } from '../errors.js';

const HEARTBEAT_MS = 15_000;

export interface EventStream {
  /** Aborts when the stream ends, whoever ends it (the client, the server closing, close()). */
  readonly signal: AbortSignal;
  /** Writes messages; resolves once the client has taken them (or the stream ended), never buffering more. */
  send(messages: ReadonlyArray<{ data: string; id?: string | number; event?: string }>): Promise<void>;
  /** Writes a comment line (ignored by clients). */
  comment(text: string): void;
  close(): void;
}

export interface OpenOptions {
  /** The `retry:` field: how long an EventSource waits before it reconnects after the stream ended. */
  readonly retryMs?: number;
}

/** Why a stream could not be opened: the client holds too many, the server holds too many, or it is closing. */
export type Refusal = 'too-many' | 'full' | 'closing';

export interface StreamLimits {
  /** Open streams one client address may hold. Default: no limit. */
  readonly perClient?: number;
  /** Open streams in all. Default: no limit. */
  readonly total?: number;
  /** What the streams are, and the setting that limits them, for the 429 message. */
  readonly what?: string;
}

/**
 * The open event streams of one server. Create it while registering routes (before the server listens):
 * it ends every open stream when the server closes.
 */
export class EventStreams {
  readonly perClient: number;
  readonly total: number;
  readonly #what: string;
  readonly #open = new Set<EventStream>();
  readonly #byClient = new Map<string, number>();
  #closing = false;

  constructor(app: FastifyInstance, options: StreamLimits = {}) {
    this.perClient = options.perClient ?? Number.POSITIVE_INFINITY;
    this.total = options.total ?? Number.POSITIVE_INFINITY;
    this.#what = options.what ?? 'streams';
    app.addHook('preClose', (done) => {
      this.#closing = true;
      for (const stream of [...this.#open]) stream.close();
      done();
    });
  }

  /** Takes over the reply and starts a stream on it, or says why it may not (the reply is left alone). */
  open(request: FastifyRequest, reply: FastifyReply, options: OpenOptions = {}): EventStream | Refusal {
    if (this.#closing) return 'closing';
    const client = request.ip;
    const count = this.#byClient.get(client) ?? 0;
    if (count >= this.perClient) return 'too-many';
    if (this.#open.size >= this.total) return 'full';
    this.#byClient.set(client, count + 1);
    const stream = startStream(request, reply, options, () => {
      this.#open.delete(stream);
      const left = (this.#byClient.get(client) ?? 1) - 1;
      if (left <= 0) this.#byClient.delete(client);
      else this.#byClient.set(client, left);
    });
    this.#open.add(stream);
    return stream;
  }

  /** Like open(), but a refusal is thrown: 429 (with Retry-After) for a limit, 503 while closing. */
  openOrThrow(request: FastifyRequest, reply: FastifyReply, options: OpenOptions = {}): EventStream {
    const stream = this.open(request, reply, options);
    if (stream === 'closing') throw new NotRunningError('the node is stopping');
    if (stream === 'too-many') {
      throw new TooManyRequestsError(`this client already has ${this.perClient} open ${this.#what}`);
    }
    if (stream === 'full') {
      throw new TooManyRequestsError(`this node already serves ${this.total} open ${this.#what}`);
    }
    return stream;
  }
}

function startStream(
  request: FastifyRequest,
  reply: FastifyReply,
  options: OpenOptions,
  onEnd: () => void,
): EventStream {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  raw.write(`${options.retryMs === undefined ? '' : `retry: ${options.retryMs}\n`}: stream open\n\n`);
  const ended = new AbortController();
  const heartbeat = setInterval(() => raw.write(': keep-alive\n\n'), HEARTBEAT_MS);
  heartbeat.unref();
  const end = (): void => {
    if (ended.signal.aborted) return;
    ended.abort();
    clearInterval(heartbeat);
    onEnd();
    if (!raw.destroyed) {
      raw.end();
      raw.socket?.end();
    }
  };
  request.raw.on('close', end);
  raw.on('close', end);
  raw.on('error', end);
  return {
    signal: ended.signal,
    async send(messages) {
      if (ended.signal.aborted || messages.length === 0) return;
      let frames = '';
      for (const message of messages) {
        if (message.id !== undefined) frames += `id: ${String(message.id)}\n`;
        if (message.event !== undefined) frames += `event: ${message.event}\n`;
        for (const line of message.data.split('\n')) frames += `data: ${line}\n`;
        frames += '\n';
      }
      // A slow reader holds the stream back (TCP backpressure) instead of filling this process's memory.
      if (!raw.write(frames)) await drained(raw, ended.signal);
    },
    comment(text) {
      if (!ended.signal.aborted) raw.write(`: ${text.replace(/\n/g, ' ')}\n\n`);
    },
    close: end,
  };
}

function drained(raw: NodeJS.WritableStream, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      raw.off('drain', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    raw.on('drain', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
