// The event API of a node started in-process, on the embedded store and on PostgreSQL: appends (one, many,
// duplicates), reads with filters, count, offset-at, listener offsets, bad inputs, the SSE stream with
// Last-Event-ID, the per-client stream limit, and a stream that ends when the node stops.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import { createTestDatabase } from '../support/postgres.js';
import { call, openStream } from './support.js';

const log = createLogger({ level: 'silent' });

interface Started {
  node: BatonNode;
  base: string;
  dispose(): Promise<void>;
}

async function embeddedNode(extra: Record<string, unknown> = {}): Promise<Started> {
  const dir = await mkdtemp(join(tmpdir(), 'baton-events-'));
  const node = await startNode(
    {
      node: { name: 'events-node', data_dir: dir, shutdown_timeout_ms: 5000 },
      http: { port: 0 },
      events: { max_batch: 50, max_streams_per_client: 3 },
      ...extra,
    },
    { log },
  );
  return {
    node,
    base: node.address ?? '',
    async dispose() {
      await node.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function postgresNode(): Promise<Started> {
  const database = await createTestDatabase();
  const dir = await mkdtemp(join(tmpdir(), 'baton-events-'));
  const node = await startNode(
    {
      node: { name: 'events-node', data_dir: dir, shutdown_timeout_ms: 5000 },
      http: { port: 0 },
      store: { url: database.url, pool_size: 4 },
      events: { max_batch: 50, max_streams_per_client: 3 },
    },
    { log },
  );
  return {
    node,
    base: node.address ?? '',
    async dispose() {
      await node.stop();
      await database.drop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

describe.each([
  ['embedded', () => embeddedNode()],
  ['postgres', postgresNode],
])('event API on %s', (_kind, start) => {
  let started: Started;
  let base: string;

  beforeAll(async () => {
    started = await start();
    base = started.base;
  });

  afterAll(async () => {
    await started.dispose();
  });

  it('appends one event, many, or {events}, with consecutive offsets', async () => {
    const one = await call(base, 'POST', '/v1/events', { json: { key: 'a', value: '1', sender: 's' } });
    expect(one.status).toBe(201);
    const [first] = one.body['events'] as Array<Record<string, unknown>>;
    expect(first).toMatchObject({
      key: 'a',
      value: '1',
      sender: 's',
      namespace: 'default',
      duplicate: false,
    });
    expect(typeof first?.['create_time']).toBe('number');
    const offset = Number(first?.['offset']);

    const many = await call(base, 'POST', '/v1/events', {
      json: [
        { key: 'b', value: '2' },
        { key: 'c', context: '{"run":1}', namespace: 'other' },
      ],
    });
    expect(many.status).toBe(201);
    const wrapped = await call(base, 'POST', '/v1/events', {
      json: { events: [{ key: 'd', context: { run: 2 } }] },
    });
    expect(wrapped.status).toBe(201);
    const offsets = [
      ...(many.body['events'] as Array<Record<string, unknown>>),
      ...(wrapped.body['events'] as Array<Record<string, unknown>>),
    ].map((event) => Number(event['offset']));
    expect(offsets).toEqual([offset + 1, offset + 2, offset + 3]);
    expect((wrapped.body['events'] as Array<Record<string, unknown>>)[0]?.['context']).toBe('{"run":2}');
  });

  it('stores a resent event (same client_id and seq) once', async () => {
    const event = { key: 'once', value: 'x', client_id: 'producer-1', seq: 7 };
    const first = await call(base, 'POST', '/v1/events', { json: event });
    const again = await call(base, 'POST', '/v1/events', { json: event });
    const [stored] = first.body['events'] as Array<Record<string, unknown>>;
    const [resent] = again.body['events'] as Array<Record<string, unknown>>;
    expect(resent?.['offset']).toBe(stored?.['offset']);
    expect(resent?.['duplicate']).toBe(true);
    const count = await call(base, 'GET', '/v1/events/count?key=once');
    expect(count.body['count']).toBe(1);
  });

  it('lists in offset order with filters; from is exclusive, to inclusive', async () => {
    const sent = await call(base, 'POST', '/v1/events', {
      json: [0, 1, 2, 3, 4].map((n) => ({
        key: n % 2 === 0 ? 'even' : 'odd',
        value: String(n),
        namespace: 'filters',
      })),
    });
    const offsets = (sent.body['events'] as Array<Record<string, unknown>>).map((event) =>
      Number(event['offset']),
    );
    const [o0, o1, , o3] = offsets as [number, number, number, number, number];

    const even = await call(base, 'GET', '/v1/events?namespace=filters&keys=even');
    expect((even.body['events'] as Array<Record<string, unknown>>).map((event) => event['value'])).toEqual([
      '0',
      '2',
      '4',
    ]);

    const range = await call(base, 'GET', `/v1/events?namespace=filters&from=${o0}&to=${o3}`);
    expect((range.body['events'] as Array<Record<string, unknown>>).map((event) => event['value'])).toEqual([
      '1',
      '2',
      '3',
    ]);

    const limited = await call(
      base,
      'GET',
      `/v1/events?namespace=filters&from=${o1}&limit=2&key=even&key=odd`,
    );
    expect((limited.body['events'] as Array<Record<string, unknown>>).map((event) => event['value'])).toEqual(
      ['2', '3'],
    );

    const count = await call(base, 'GET', `/v1/events/count?namespace=filters&keys=odd,even&from=${o0}`);
    expect(count.body['count']).toBe(4);
    const capped = await call(base, 'GET', `/v1/events/count?namespace=filters&from=${o0}&cap=3`);
    expect(capped.body).toEqual({ count: 3, capped: true });
  });

  it('answers the offset at a time and the head', async () => {
    const before = new Date(Date.now() - 60_000).toISOString();
    const past = await call(base, 'GET', `/v1/events/offset-at?time=2000-01-01T00:00:00Z`);
    expect(past.body['offset']).toBe(0);
    const sent = await call(base, 'POST', '/v1/events', { json: { key: 'now' } });
    const offset = Number((sent.body['events'] as Array<Record<string, unknown>>)[0]?.['offset']);
    const later = await call(base, 'GET', `/v1/events/offset-at?time=${Date.now() + 60_000}`);
    expect(Number(later.body['offset'])).toBeGreaterThanOrEqual(offset);
    const head = await call(base, 'GET', '/v1/events/head');
    expect(Number(head.body['offset'])).toBeGreaterThanOrEqual(offset);
    const earlier = await call(base, 'GET', `/v1/events/offset-at?time=${encodeURIComponent(before)}`);
    expect(Number(earlier.body['offset'])).toBeLessThan(offset);
  });

  it('keeps named listener offsets, which never move back', async () => {
    const empty = await call(base, 'GET', '/v1/events/listeners/reporter?namespace=jobs');
    expect(empty.body).toMatchObject({ namespace: 'jobs', name: 'reporter', offset: null });
    await call(base, 'PUT', '/v1/events/listeners/reporter?namespace=jobs', { json: { offset: 12 } });
    const back = await call(base, 'PUT', '/v1/events/listeners/reporter?namespace=jobs', {
      json: { offset: 5 },
    });
    expect(back.body['offset']).toBe(12);
    const other = await call(base, 'GET', '/v1/events/listeners/reporter');
    expect(other.body['offset']).toBeNull();

    // Lags: offsets behind the head; events of its namespace behind only when asked, up to the cap.
    const head = Number((await call(base, 'GET', '/v1/events/head')).body['offset']);
    await call(base, 'POST', '/v1/events', {
      json: [1, 2, 3].map(() => ({ key: 'job', namespace: 'jobs' })),
    });
    const lags = await call(base, 'GET', '/v1/events/listeners');
    const reporter = (body: Record<string, unknown>) =>
      (body['listeners'] as Array<Record<string, unknown>>).find(
        (listener) => listener['name'] === 'reporter',
      );
    expect(reporter(lags.body)).toEqual({ namespace: 'jobs', name: 'reporter', lag: head + 3 - 12 });
    const counted = await call(base, 'GET', '/v1/events/listeners?count=2');
    expect(reporter(counted.body)).toMatchObject({ events_behind: 2, events_behind_capped: true });
  });

  it('answers 400 with a message to bad input, 413 past max_batch', async () => {
    const cases: Array<[string, string, unknown, RegExp]> = [
      ['POST', '/v1/events', { value: 'no key' }, /event\.key: required/],
      ['POST', '/v1/events', { key: 'k', namespace: 'bad namespace!' }, /namespace/],
      ['POST', '/v1/events', { key: 'k', context: '{not json' }, /context: expected a JSON text/],
      ['POST', '/v1/events', { key: 'k', colour: 'red' }, /colour: unknown field/],
      ['POST', '/v1/events', { key: 'task.a.succeeded', sender: 'baton' }, /sender: "baton" is reserved/],
      ['POST', '/v1/events', [{ key: 'k' }, { key: '' }], /events\[1\]\.key/],
      ['POST', '/v1/events', [], /no events/],
      ['POST', '/v1/events', { key: 'k', client_id: 'c' }, /client_id.*seq/],
      ['GET', '/v1/events?from=abc', undefined, /from/],
      ['GET', '/v1/events?limit=0', undefined, /limit/],
      ['GET', '/v1/events/offset-at?time=yesterday', undefined, /ISO 8601/],
      ['GET', '/v1/events/offset-at', undefined, /time/],
      ['GET', '/v1/events/stream?from=-1', undefined, /from/],
      ['PUT', '/v1/events/listeners/x', { offset: -1 }, /offset/],
    ];
    for (const [method, path, json, message] of cases) {
      const reply = await call(base, method, path, json === undefined ? {} : { json });
      expect(reply.status, `${method} ${path} ${JSON.stringify(json)}`).toBe(400);
      expect(String(reply.body['error'])).toMatch(message);
    }
    const tooMany = await call(base, 'POST', '/v1/events', {
      json: Array.from({ length: 51 }, (_, n) => ({ key: `k${n}` })),
    });
    expect(tooMany.status).toBe(413);
    expect(String(tooMany.body['error'])).toMatch(/max_batch/);
  });

  it('streams events as SSE and resumes after Last-Event-ID', async () => {
    const head = Number((await call(base, 'GET', '/v1/events/head')).body['offset']);
    const stream = await openStream(`${base}/v1/events/stream?namespace=sse&keys=tick&from=${head}`);
    expect(stream.status).toBe(200);
    await call(base, 'POST', '/v1/events', {
      json: [1, 2, 3, 4].map((n) => ({
        key: n === 2 ? 'other' : 'tick',
        value: String(n),
        namespace: 'sse',
      })),
    });
    await call(base, 'POST', '/v1/events', { json: { key: 'tick', value: 'elsewhere' } });
    const received = await stream.take(3);
    stream.close();
    expect(received.map((event) => event.data['value'])).toEqual(['1', '3', '4']);
    expect(received.map((event) => event.type)).toEqual(['event', 'event', 'event']);
    expect(received.map((event) => event.id)).toEqual(received.map((event) => String(event.data['offset'])));

    // The header wins over `from`: the stream goes on after the last event the client saw.
    const resumed = await openStream(`${base}/v1/events/stream?namespace=sse&keys=tick&from=0`, {
      lastEventId: received[0]?.id ?? '',
    });
    const rest = await resumed.take(2);
    resumed.close();
    expect(rest.map((event) => event.data['value'])).toEqual(['3', '4']);
  });

  it('limits open streams per client address', async () => {
    const open = await Promise.all([1, 2, 3].map(() => openStream(`${base}/v1/events/stream`)));
    expect(open.map((stream) => stream.status)).toEqual([200, 200, 200]);
    const refused = await call(base, 'GET', '/v1/events/stream');
    expect(refused.status).toBe(429);
    expect(String(refused.body['error'])).toMatch(/max_streams_per_client/);
    for (const stream of open) stream.close();
    // Closed streams are released (the server notices the disconnect).
    let status = 0;
    for (let attempt = 0; attempt < 100 && status !== 200; attempt++) {
      const reader = await openStream(`${base}/v1/events/stream`);
      status = reader.status;
      reader.close();
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(status).toBe(200);
  });
});

describe('event API edge cases', () => {
  it('ends open streams cleanly when the node stops', async () => {
    const started = await embeddedNode();
    const stream = await openStream(`${started.base}/v1/events/stream?from=0`);
    await call(started.base, 'POST', '/v1/events', { json: { key: 'k' } });
    await stream.take(1);
    const stopping = started.dispose();
    await stream.ended(15_000);
    await stopping;
  });

  it('answers 404 when events are disabled', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'baton-events-'));
    const node = await startNode(
      {
        node: { name: 'no-events', data_dir: dir },
        http: { port: 0 },
        events: { enabled: false },
        components: {},
      },
      {
        log,
        components: [
          { name: 'idle', runOn: 'any', start: () => Promise.resolve(), stop: () => Promise.resolve() },
        ],
      },
    );
    try {
      for (const path of ['/v1/events', '/v1/events/stream', '/v1/events/count']) {
        const reply = await call(node.address ?? '', 'GET', path);
        expect(reply.status).toBe(404);
        expect(String(reply.body['error'])).toMatch(/events are disabled/);
      }
    } finally {
      await node.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
