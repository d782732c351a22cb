// EventClient given several node URLs: the list is parsed and checked; a send moves on to the next node on
// an unreachable or silent node, a 5xx or a 429, and stops at a refusal (4xx); a copy stored by a node that
// then failed to answer is not stored again; a send that no node takes fails within its bound, naming every
// node; a listener whose stream breaks follows again on the next node from its last offset.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { BackendUnavailableError, EventClient, ForbiddenError, startNode } from '../../src/index.js';
import type { BatonNode, StoredEvent } from '../../src/index.js';
import { movesOn } from '../../src/events/failover-transport.js';
import { RemoteError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { freePort } from '../support/process.js';
import { startTcpProxy } from '../support/tcp-proxy.js';
import { until } from './support.js';

const log = createLogger({ level: 'silent' });

let node: BatonNode;
let dir: string;
let live: string;
const servers: http.Server[] = [];
const clients: EventClient[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-client-nodes-'));
  node = await startNode(
    { node: { name: 'nodes-node', data_dir: dir, shutdown_timeout_ms: 5000 }, http: { port: 0 } },
    { log },
  );
  live = node.address ?? '';
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  await Promise.all(
    servers.splice(0).map(
      (server) =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    ),
  );
});

afterAll(async () => {
  await node.stop();
  await rm(dir, { recursive: true, force: true });
});

function client(target: string, options: ConstructorParameters<typeof EventClient>[1] = {}): EventClient {
  const made = new EventClient(target, { log, env: {}, retry: { initialMs: 20, maxMs: 200 }, ...options });
  clients.push(made);
  return made;
}

/** An HTTP server on 127.0.0.1 that hands each request to `handle`; `requests` counts them. */
async function fakeNode(
  handle: (request: http.IncomingMessage, response: http.ServerResponse, body: Buffer) => void,
): Promise<{ url: string; requests: () => number }> {
  let requests = 0;
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      requests++;
      handle(request, response, Buffer.concat(chunks));
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests: () => requests };
}

/** A fake node that answers every request with `status` and `body` (JSON). */
function answering(status: number, body: Record<string, unknown>) {
  return fakeNode((_request, response) =>
    response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)),
  );
}

/** How many events of `namespace` the live node stored with `value`. */
async function stored(namespace: string, value?: string): Promise<StoredEvent[]> {
  const events = await node.events?.list({ namespace, limit: 1000 });
  return (events ?? []).filter((event) => value === undefined || event.value === value);
}

describe('EventClient with several nodes: the list', () => {
  it('takes a comma-separated list, trimmed, and refuses an empty or invalid entry by its place', () => {
    expect(() => client(' http://127.0.0.1:1 , http://127.0.0.1:2/ ')).not.toThrow();
    expect(() => client('http://127.0.0.1:1,')).toThrow(/EventClient: entry 2 of 2 is empty/);
    expect(() => client('http://127.0.0.1:1, ,http://127.0.0.1:2')).toThrow(/entry 2 of 3 is empty/);
    expect(() => client('http://127.0.0.1:1,ftp://127.0.0.1:2')).toThrow(
      /entry 2 of 2, "ftp:\/\/127.0.0.1:2", is not an http:\/\/ or https:\/\/ URL/,
    );
    expect(() => client('http://127.0.0.1:1,nothing here')).toThrow(
      /entry 2 of 2, "nothing here", is not a URL/,
    );
    expect(
      () => new EventClient(undefined, { log, env: { BATON_URL: 'http://127.0.0.1:1,,http://127.0.0.1:2' } }),
    ).toThrow(/BATON_URL: entry 2 of 3 is empty/);
    expect(() => client('http://127.0.0.1:1,http://127.0.0.1:2', { requestTimeoutMs: 0 })).toThrow(
      /requestTimeoutMs must be a number of milliseconds > 0/,
    );
  });

  it('reads BATON_URL with commas', async () => {
    const down = `http://127.0.0.1:${await freePort()}`;
    const made = new EventClient(undefined, {
      log,
      env: { BATON_URL: `${down}, ${live}` },
      namespace: 'env-list',
    });
    clients.push(made);
    const event = await made.sendEvent('k', 'from-env');
    expect(event.duplicate).toBe(false);
    expect(await stored('env-list', 'from-env')).toHaveLength(1);
  });
});

describe('EventClient with several nodes: which failures move on', () => {
  it.each([
    ['500', 500, { error: 'boom', code: 'INTERNAL' }],
    ['502 without a Baton body', 502, { message: 'bad gateway' }],
    ['503 (not primary)', 503, { error: 'secondary', code: 'NOT_PRIMARY', role: 'secondary', primary: null }],
    ['503 (store down)', 503, { error: 'store: down', code: 'BACKEND_UNAVAILABLE', backend: 'store' }],
    ['504', 504, {}],
    ['429', 429, { error: 'slow down', code: 'TOO_MANY_REQUESTS' }],
  ])('moves on after %s and stores the event once', async (name, status, body) => {
    const failing = await answering(status, body);
    const namespace = `moves-${status}-${name.length}`;
    const sender = client(`${failing.url},${live}`, { namespace });
    const event = await sender.sendEvent('k', name);
    expect(event.duplicate).toBe(false);
    expect(failing.requests()).toBe(1);
    expect(await stored(namespace, name)).toHaveLength(1);
    // The node that answered is the current one now: the next send goes there first.
    await sender.sendEvent('k', 'second');
    expect(failing.requests()).toBe(1);
  });

  it('moves on from a node that cannot be reached, and from one that does not answer in time', async () => {
    const down = `http://127.0.0.1:${await freePort()}`;
    const silent = await fakeNode(() => undefined);
    const sender = client(`${down},${silent.url},${live}`, {
      namespace: 'moves-silent',
      requestTimeoutMs: 300,
    });
    const started = Date.now();
    await sender.sendEvent('k', 'v');
    expect(Date.now() - started).toBeLessThan(5000);
    expect(silent.requests()).toBe(1);
    expect(await stored('moves-silent', 'v')).toHaveLength(1);
  });

  it.each([
    [400, { error: 'bad', code: 'BAD_REQUEST' }],
    [401, { error: 'no token', code: 'UNAUTHORIZED' }],
    [403, { error: 'not yours', code: 'FORBIDDEN' }],
    [413, { error: 'too large', code: 'PAYLOAD_TOO_LARGE' }],
    [404, {}],
  ])('stops at a refusal %i: the error surfaces and no other node is asked', async (status, body) => {
    const refusing = await answering(status, body);
    const namespace = `refused-${status}`;
    const sender = client(`${refusing.url},${live}`, { namespace });
    const error: unknown = await sender.sendEvent('k', 'v').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(Error);
    expect((error as { status: number }).status).toBe(status);
    if (status === 403) expect(error).toBeInstanceOf(ForbiddenError);
    expect(refusing.requests()).toBe(1);
    expect(await stored(namespace)).toHaveLength(0);
  });

  it('classifies errors: transient and 5xx move on, refusals and foreign errors do not', () => {
    expect(movesOn(new RemoteError('x', 500, 'INTERNAL'))).toBe(true);
    expect(movesOn(new RemoteError('x', 201, undefined))).toBe(true); // a success answer cut short
    expect(movesOn(new BackendUnavailableError('node', 'cannot be reached'))).toBe(true);
    expect(movesOn(new RemoteError('x', 408, undefined))).toBe(false);
    expect(movesOn(new ForbiddenError('x'))).toBe(false);
    expect(movesOn(new TypeError('x'))).toBe(false);
  });

  it('does not store twice an event that a node stored before it failed to answer', async () => {
    // Forwards the request to the live node, which stores it, then drops the connection unanswered.
    const dying = await fakeNode((request, response, body) => {
      void fetch(live + (request.url ?? '/'), {
        method: request.method ?? 'GET',
        headers: { 'content-type': 'application/json' },
        ...(body.length > 0 ? { body } : {}),
      })
        .then((reply) => reply.text())
        .finally(() => response.socket?.destroy());
    });
    const sender = client(`${dying.url},${live}`, { namespace: 'stored-before' });
    const event = await sender.sendEvent('k', 'once');
    expect(dying.requests()).toBe(1);
    expect(event.duplicate).toBe(true);
    const events = await stored('stored-before', 'once');
    expect(events).toHaveLength(1);
    expect(events[0]?.offset).toBe(event.offset);
    expect(sender.seq).toBe(1);
  });

  it('fails within sendTimeoutMs when no node takes the send, naming every node and its reason', async () => {
    const down = `http://127.0.0.1:${await freePort()}`;
    const busy = await answering(503, {
      error: 'store: down',
      code: 'BACKEND_UNAVAILABLE',
      backend: 'store',
    });
    const sender = client(`${down},${busy.url}`, { namespace: 'nowhere', sendTimeoutMs: 1500 });
    const started = Date.now();
    const error: unknown = await sender.sendEvent('k', 'v').catch((caught: unknown) => caught);
    const elapsed = Date.now() - started;
    expect(error).toBeInstanceOf(BackendUnavailableError);
    const message = (error as Error).message;
    expect(message).toContain(`${down}: cannot be reached`);
    expect(message).toContain(`${busy.url}: store: down`);
    expect(elapsed).toBeGreaterThanOrEqual(1500);
    expect(elapsed).toBeLessThan(10_000);
    expect(busy.requests()).toBeGreaterThan(1); // it went around the list more than once
  });
});

describe('EventClient with several nodes: listeners', () => {
  it('follows again on the next node when its stream breaks, from its last offset', async () => {
    const port = Number(new URL(live).port);
    const proxy = await startTcpProxy({ host: '127.0.0.1', port });
    const proxied = `http://127.0.0.1:${proxy.port}`;
    try {
      const namespace = 'listen-nodes';
      const listener = client(`${proxied},${live}`, { namespace });
      const got: StoredEvent[] = [];
      await listener.registerListener((batch) => void got.push(...batch), 'tick', { from: 'latest' });
      const sender = client(live, { namespace });
      for (let index = 0; index < 5; index++) await sender.sendEvent('tick', String(index));
      await until(() => got.length >= 5, 20_000, 'the first five events');
      await proxy.close(); // the stream breaks, and the proxied node cannot be reached any more
      for (let index = 5; index < 10; index++) await sender.sendEvent('tick', String(index));
      await until(() => got.length >= 10, 30_000, 'the next five events, over the other node');
      expect(got.map((event) => event.value)).toEqual(
        Array.from({ length: 10 }, (_, index) => String(index)),
      );
      const offsets = got.map((event) => event.offset);
      expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
      expect(new Set(offsets).size).toBe(10);
    } finally {
      await proxy.close();
    }
  });
});
