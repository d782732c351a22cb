// Server-Sent Events over a fastify reply: the headers, `id:`/`event:`/`data:` frames, a comment every
// 15 s so that proxies keep the connection open, and an end for every open stream when the server closes
// (an open stream would otherwise hold the node's shutdown).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

const HEARTBEAT_MS = 15_000;

export interface EventStream {
  /** Writes one message; returns false when the client is not reading fast enough (backpressure). */
  send(message: { data: string; id?: string | number; event?: string }): boolean;
  /** Writes a comment line (ignored by clients). */
  comment(text: string): void;
  /** Calls `fn` once when the stream ends, whoever ends it. */
  onClose(fn: () => void): void;
  readonly closed: boolean;
  close(): void;
}

/**
 * The open event streams of one server. Create it while registering routes (before the server listens):
 * it ends every open stream when the server closes.
 */
export class EventStreams {
  readonly #open = new Set<EventStream>();

  constructor(app: FastifyInstance) {
    app.addHook('preClose', (done) => {
      for (const stream of [...this.#open]) stream.close();
      done();
    });
  }

  /** How many streams are open. */
  get size(): number {
    return this.#open.size;
  }

  /** Takes over the reply and starts a stream on it. */
  open(request: FastifyRequest, reply: FastifyReply): EventStream {
    const stream = openEventStream(request, reply, () => this.#open.delete(stream));
    this.#open.add(stream);
    return stream;
  }
}

function openEventStream(request: FastifyRequest, reply: FastifyReply, onEnd: () => void): EventStream {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  raw.write(': stream open\n\n');
  const closers: Array<() => void> = [];
  let closed = false;
  const heartbeat = setInterval(() => raw.write(': keep-alive\n\n'), HEARTBEAT_MS);
  const end = (): void => {
    if (closed) return;
    closed = true;
    clearInterval(heartbeat);
    onEnd();
    for (const fn of closers.splice(0)) fn();
    if (!raw.writableEnded) raw.end();
  };
  request.raw.on('close', end);
  raw.on('error', end);
  const stream: EventStream = {
    send(message) {
      if (closed) return false;
      let frame = '';
      if (message.id !== undefined) frame += `id: ${String(message.id)}\n`;
      if (message.event !== undefined) frame += `event: ${message.event}\n`;
      for (const line of message.data.split('\n')) frame += `data: ${line}\n`;
      return raw.write(`${frame}\n`);
    },
    comment(text) {
      if (!closed) raw.write(`: ${text.replace(/\n/g, ' ')}\n\n`);
    },
    onClose(fn) {
      if (closed) fn();
      else closers.push(fn);
    },
    get closed() {
      return closed;
    },
    close: end,
  };
  return stream;
}
