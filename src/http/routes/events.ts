// The event log over HTTP: append (POST /v1/events), read (GET /v1/events, /count, /offset-at, /head), follow
// as Server-Sent Events (GET /v1/events/stream, resumable with Last-Event-ID), and the stored offsets of named
// listeners (GET/PUT /v1/events/listeners/:name). Offsets in queries: `from` is exclusive, `to` inclusive.
// Reads need the read scope, appends and stored offsets the write scope; a token limited to some
// namespaces may only use those, and must name one on every read.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';

import type { EventsConfig } from '../../config/types.js';
import { describeError, EventsDisabledError, ForbiddenError, PayloadTooLargeError } from '../../errors.js';
import type { EventLog } from '../../events/log.js';
import { GroupAppender } from '../../events/group-append.js';
import type { AppendedEvent, EventInput } from '../../events/types.js';
import { checkProducerSender, checkQuery, DEFAULT_NAMESPACE, InvalidEventError } from '../../events/types.js';
import { eventJson } from '../../events/wire.js';
import { allowedNamespaces, needs } from '../auth.js';
import { EventStreams } from '../sse.js';
import type { HttpNode } from '../node.js';
import { decimalInteger, integerText, parseInput } from '../validate.js';

/** What an EventSource waits before it reconnects after the stream ended. */
const RETRY_MS = 1_000;
/** Events read per query while following. */
const STREAM_BATCH = 1_000;
const ISO_DATE = /^\d{4}-\d{2}-\d{2}(?:$|[T ])/;
/** Open event streams one node serves in all, whatever the clients. */
const MAX_STREAMS = 1_024;
const EVENT_FIELDS = ['key', 'value', 'context', 'namespace', 'sender', 'client_id', 'seq'];

const offsetText = integerText('an offset', 0);
const keysInput = z.union([z.string(), z.array(z.string())]).optional();
const readQuery = z.object({
  namespace: z.string().optional(),
  keys: keysInput,
  key: keysInput,
  sender: z.string().optional(),
  from: offsetText.optional(),
  to: offsetText.optional(),
  limit: integerText('a limit', 1, 10_000).optional(),
});
/** A count stops at `cap` (default DEFAULT_COUNT_CAP) and says so (`capped`). */
const countQuery = z.object({ cap: integerText('a cap', 1, 10_000_000).optional() });
/** `count`: also count each listener's events behind, up to this many (a walk of an index per listener). */
const listenersQuery = z.object({ count: integerText('a cap', 1, 1_000_000).optional() });
const streamQuery = z.object({
  namespace: z.string().optional(),
  keys: keysInput,
  key: keysInput,
  from: z
    .union([z.literal('latest'), offsetText], {
      error: `expected "latest" or an offset (an integer from 0 to ${Number.MAX_SAFE_INTEGER})`,
    })
    .optional(),
});
/** One event of a POST body; normalizeEvent checks lengths, namespaces and the JSON of the context. */
const eventItem = z
  .object({
    key: z.string({ error: 'required: expected a non-empty string' }),
    value: z.string().nullable().optional(),
    // JSON text as stored, or a JSON value that is stored as its text.
    context: z.unknown().optional(),
    namespace: z.string().optional(),
    sender: z.string().nullable().optional(),
    client_id: z.string().optional(),
    seq: z.number().int().min(0).optional(),
  })
  .strict();
const listenerQuery = z.object({ namespace: z.string().default(DEFAULT_NAMESPACE) });
const listenerBody = z.object({ offset: z.number().int().min(0) }).strict();
const timeQuery = z.object({ time: z.string().min(1, { error: 'required' }) });

export function registerEventRoutes(app: FastifyInstance, node: HttpNode, config: EventsConfig): void {
  const log = (): EventLog => {
    if (!node.events) {
      throw new EventsDisabledError();
    }
    return node.events;
  };
  const streams = new EventStreams(app, {
    perClient: config.maxStreamsPerClient,
    total: MAX_STREAMS,
    what: 'event streams ([events] max_streams_per_client)',
  });
  const read = needs('read', { namespaces: 'checked' });
  const write = needs('write', { namespaces: 'checked' });
  // Requests that arrive together share a transaction (group commit): many one-event producers stay fast.
  let appender: { log: EventLog; group: GroupAppender } | undefined;
  const append = (events: readonly EventInput[]): Promise<AppendedEvent[]> => {
    const current = log();
    if (appender?.log !== current)
      appender = { log: current, group: new GroupAppender(current, config.maxBatch) };
    return appender.group.append(events);
  };

  app.post('/v1/events', write, async (request, reply) => {
    log();
    const inputs = eventInputs(request.body, config.maxBatch);
    for (const [index, input] of inputs.entries()) {
      authorize(
        request,
        input.namespace ?? DEFAULT_NAMESPACE,
        inputs.length === 1 ? 'event' : `events[${index}]`,
      );
    }
    const appended = await append(inputs);
    return reply.code(201).send({ events: appended.map(eventJson) });
  });

  app.get('/v1/events', read, async (request) => {
    const query = readFilter(request);
    const events = await log().list({ ...query, limit: query.limit ?? 1_000 });
    return { events: events.map(eventJson) };
  });

  app.get('/v1/events/count', read, async (request) => {
    const { limit: _ignored, ...query } = readFilter(request);
    const { cap } = parseInput(countQuery, request.query, 'query');
    return await log().count(query, cap);
  });

  app.get('/v1/events/head', needs('read'), async () => ({ offset: await log().latestOffset() }));

  app.get('/v1/events/offset-at', needs('read'), async (request) => {
    const events = log();
    const { time } = parseInput(timeQuery, request.query, 'query');
    const at = parseTime(time);
    return { offset: await events.offsetAt(at), time: at.toISOString() };
  });

  app.get('/v1/events/listeners', needs('read', { filtered: true }), async (request) => {
    const allowed = allowedNamespaces(request);
    const { count } = parseInput(listenersQuery, request.query, 'query');
    const lags = await log().listenerLags(count === undefined ? {} : { countUpTo: count });
    return {
      listeners: (allowed ? lags.filter((lag) => allowed.includes(lag.namespace)) : lags).map(
        ({ eventsBehind, eventsBehindCapped, ...lag }) =>
          eventsBehind === undefined
            ? lag
            : { ...lag, events_behind: eventsBehind, events_behind_capped: eventsBehindCapped ?? false },
      ),
    };
  });

  app.get<{ Params: { name: string } }>('/v1/events/listeners/:name', read, async (request) => {
    const events = log();
    const { namespace } = parseInput(listenerQuery, request.query, 'query');
    authorize(request, namespace, 'namespace');
    const offset = await events.listenerOffset(namespace, request.params.name);
    return { namespace, name: request.params.name, offset: offset ?? null };
  });

  app.put<{ Params: { name: string } }>('/v1/events/listeners/:name', write, async (request) => {
    const events = log();
    const { namespace } = parseInput(listenerQuery, request.query, 'query');
    authorize(request, namespace, 'namespace');
    const body = parseInput(listenerBody, request.body ?? {}, 'body');
    await events.commitListenerOffset(namespace, request.params.name, body.offset);
    const offset = await events.listenerOffset(namespace, request.params.name);
    return { namespace, name: request.params.name, offset: offset ?? null };
  });

  app.get('/v1/events/stream', read, async (request, reply) => {
    const events = log();
    const query = parseInput(streamQuery, request.query, 'query');
    const keys = keyList(query);
    checkQuery({ namespace: query.namespace, keys });
    authorizeRead(request, query.namespace);
    const resumeAt = lastEventId(request);
    const after =
      resumeAt ??
      (query.from === 'latest' || query.from === undefined ? await events.latestOffset() : query.from);
    await streamEvents(request, reply, streams, events, { namespace: query.namespace, keys, after });
  });
}

/** Sends the events after `after` as SSE until the client goes away or the node stops. */
async function streamEvents(
  request: FastifyRequest,
  reply: FastifyReply,
  streams: EventStreams,
  events: EventLog,
  query: { namespace: string | undefined; keys: string[] | undefined; after: number },
): Promise<void> {
  const stream = streams.openOrThrow(request, reply, { retryMs: RETRY_MS });
  stream.comment(`following after offset ${query.after}`);
  try {
    for await (const batch of events.follow({ ...query, limit: STREAM_BATCH }, stream.signal)) {
      await stream.send(
        batch.map((event) => ({ id: event.offset, event: 'event', data: JSON.stringify(eventJson(event)) })),
      );
    }
  } catch (error) {
    if (!stream.signal.aborted) {
      request.log.warn({ err: describeError(error) }, 'event stream failed; closing it');
    }
  } finally {
    // The node is stopping or the stream failed: the client reconnects (maybe to another node).
    stream.close();
  }
}

/** The events of a POST body: one event, an array of them, or {"events": [...]}. */
function eventInputs(body: unknown, maxBatch: number): EventInput[] {
  let items: unknown[];
  if (Array.isArray(body)) items = body;
  else if (isObject(body) && !('key' in body) && 'events' in body) {
    if (!Array.isArray(body['events'])) throw new InvalidEventError('events: expected an array of events');
    items = body['events'];
  } else if (isObject(body)) items = [body];
  else throw new InvalidEventError('expected a JSON event, an array of events, or {"events": [...]}');
  if (items.length === 0) throw new InvalidEventError('no events: send at least one');
  if (items.length > maxBatch) {
    throw new PayloadTooLargeError(
      `${items.length} events in one request; at most ${maxBatch} ([events] max_batch): send them in smaller batches`,
    );
  }
  return items.map((item, index) => eventInput(item, items.length === 1 ? 'event' : `events[${index}]`));
}

function eventInput(item: unknown, where: string): EventInput {
  if (!isObject(item)) throw new InvalidEventError(`${where}: expected an object with at least a "key"`);
  const parsed = eventItem.safeParse(item);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    if (issue?.code === 'unrecognized_keys') {
      throw new InvalidEventError(
        `${where}.${issue.keys[0] ?? ''}: unknown field; known: ${EVENT_FIELDS.join(', ')}`,
      );
    }
    const path = issue?.path.length ? `.${issue.path.join('.')}` : '';
    throw new InvalidEventError(`${where}${path}: ${issue?.message ?? 'malformed'}`);
  }
  const { context, client_id: clientId, ...event } = parsed.data;
  checkProducerSender(event.sender, `${where}.sender`);
  const contextText =
    context === undefined || context === null || typeof context === 'string'
      ? context
      : JSON.stringify(context);
  return { ...event, ...(clientId !== undefined ? { clientId } : {}), context: contextText };
}

/** The read filter of GET /v1/events and /count, checked against the token's namespaces. */
function readFilter(request: FastifyRequest): {
  namespace?: string;
  keys?: string[];
  sender?: string;
  after?: number;
  to?: number;
  limit?: number;
} {
  const query = parseInput(readQuery, request.query, 'query');
  authorizeRead(request, query.namespace);
  const keys = keyList(query);
  return {
    ...(query.namespace !== undefined ? { namespace: query.namespace } : {}),
    ...(keys ? { keys } : {}),
    ...(query.sender !== undefined ? { sender: query.sender } : {}),
    ...(query.from !== undefined ? { after: query.from } : {}),
    ...(query.to !== undefined ? { to: query.to } : {}),
    ...(query.limit !== undefined ? { limit: query.limit } : {}),
  };
}

/** `key` may repeat and names one key each time; `keys` is a comma-separated list (and may repeat too). */
function keyList(query: {
  keys?: string | string[] | undefined;
  key?: string | string[] | undefined;
}): string[] | undefined {
  const listed = [query.keys ?? []].flat().flatMap((text) => text.split(','));
  const single = [query.key ?? []].flat();
  const keys = [...listed, ...single].filter((key) => key.length > 0);
  return keys.length > 0 ? keys : undefined;
}

function lastEventId(request: FastifyRequest): number | undefined {
  const header = request.headers['last-event-id'];
  const text = Array.isArray(header) ? header[0] : header;
  if (text === undefined || text.trim() === '') return undefined;
  const offset = decimalInteger(text.trim(), 0, Number.MAX_SAFE_INTEGER);
  if (offset === undefined) {
    throw new InvalidEventError('Last-Event-ID: expected the offset of the last event seen');
  }
  return offset;
}

function parseTime(text: string): Date {
  // Digits are milliseconds; anything else must start like an ISO date (Date alone also takes "-1").
  const at = /^\d+$/.test(text) ? new Date(Number(text)) : new Date(ISO_DATE.test(text) ? text : NaN);
  if (Number.isNaN(at.getTime())) {
    throw new InvalidEventError(
      `time: expected an ISO 8601 time (2025-01-31T12:00:00Z) or milliseconds since 1970, got ${JSON.stringify(text.slice(0, 60))}`,
    );
  }
  return at;
}

/** Refuses a namespace the request's token may not use. */
function authorize(request: FastifyRequest, namespace: string, where: string): void {
  const allowed = allowedNamespaces(request);
  if (allowed && !allowed.includes(namespace)) {
    throw new ForbiddenError(
      `${where}: this token may not use namespace "${namespace}" (it may use: ${allowed.join(', ') || 'none'})`,
    );
  }
}

/** A read without a namespace covers every namespace: a token limited to some may not make it. */
function authorizeRead(request: FastifyRequest, namespace: string | undefined): void {
  const allowed = allowedNamespaces(request);
  if (allowed?.length === 0) throw new ForbiddenError('this token may use no namespace');
  if (allowed && namespace === undefined) {
    throw new ForbiddenError(
      `this token is limited to namespaces ${allowed.join(', ')}: name one with ?namespace=`,
    );
  }
  if (namespace !== undefined) authorize(request, namespace, 'namespace');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
