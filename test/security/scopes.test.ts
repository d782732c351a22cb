// The scope matrix: every route of the HTTP API (walked from the app's route table, so that a route added
// later is covered too) × {no token, a wrong token, a token with each scope alone, a token limited to another
// namespace and queue}, each answered as the access the route declares says: 401 without a valid token, 403
// without the scope or for another queue or namespace, through otherwise; listings leave out what a limited
// token may not read. A route that declares nothing is refused; a program's own route needs admin.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { FastifyInstance } from 'fastify';
import { fastify } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BatonError } from '../../src/errors.js';
import type { RouteAccess } from '../../src/http/auth.js';
import { needs, ownRoutesFromNow, registerAuth, registerRouteAccess } from '../../src/http/auth.js';
import type { RouteEntry } from '../../src/http/server.js';
import { buildHttpApp, routesOf } from '../../src/http/server.js';
import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';

const handler = fileURLToPath(new URL('../node/handlers/words.ts', import.meta.url));
const log = createLogger({ level: 'silent' });

interface Caller {
  readonly name: string;
  /** The Authorization header; undefined: none. */
  readonly token: string | undefined;
  /** Scopes of the token (admin holds them all); undefined: the token is not a valid one. */
  readonly scopes: readonly string[] | undefined;
  /** Limited to namespace team-z and queue other-queue, so refused on team-a and `words`. */
  readonly limited?: true;
}

const CALLERS: readonly Caller[] = [
  { name: 'no token', token: undefined, scopes: undefined },
  { name: 'a wrong token', token: 'wrong-token-0123456789', scopes: undefined },
  { name: 'admin alone', token: 'admin-only-0123456789', scopes: ['admin'] },
  { name: 'read alone', token: 'read-only-0123456789', scopes: ['read'] },
  { name: 'write alone', token: 'write-only-0123456789', scopes: ['write'] },
  { name: 'metrics alone', token: 'metrics-only-0123456789', scopes: ['metrics'] },
  {
    name: 'limited to team-z and other-queue',
    token: 'team-z-token-0123456789',
    scopes: ['read', 'write', 'metrics'],
    limited: true,
  },
];

let dir: string;
let node: BatonNode;
let app: FastifyInstance;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-scopes-'));
  node = await startNode(
    {
      node: { name: 'scoped', data_dir: dir },
      http: {
        port: 0,
        tokens: [
          { token: 'admin-only-0123456789', scopes: ['admin'] },
          { token: 'read-only-0123456789', scopes: ['read'] },
          { token: 'write-only-0123456789', scopes: ['write'] },
          { token: 'metrics-only-0123456789', scopes: ['metrics'] },
          {
            token: 'team-z-token-0123456789',
            scopes: ['read', 'write', 'metrics'],
            namespaces: ['team-z'],
            queues: ['other-queue'],
          },
        ],
      },
      queues: { words: { handler } },
    },
    { log },
  );
  await node.events?.commitListenerOffset('team-a', 'team-a-listener', 0);
  app = buildHttpApp(node, node.config.http, log);
  // Routes of a program's own, added after the built-in ones as a RouteRegistrar does.
  app.get('/own/undeclared', () => ({ own: true }));
  app.get('/own/read', needs('read'), () => ({ own: true }));
  await app.ready();
});

afterAll(async () => {
  await app.close();
  await node.stop();
  await rm(dir, { recursive: true, force: true });
});

/** A request for a route: parameters, the namespace and a body that name team-a and queue `words`. */
function requestFor(route: RouteEntry): { method: 'GET'; url: string; payload?: object } {
  let url = route.url.replace(/:(\w+)/g, (_match, name: string) =>
    name === 'queue' ? 'words' : name === 'id' ? '1' : 'x',
  );
  if (route.access?.namespaces === 'checked') url += '?namespace=team-a';
  const payloads: Record<string, object> = {
    'POST /v1/events': { namespace: 'team-a', key: 'k' },
    'PUT /v1/events/listeners/:name': { offset: 0 },
    // The sign-in is open: it answers for the token in its body, whatever the header.
    'POST /v1/session': { token: 'read-only-0123456789' },
  };
  const payload = payloads[`${route.method} ${route.url}`];
  return { method: route.method as 'GET', url, ...(payload ? { payload } : {}) };
}

type Expected = 'through' | 401 | 403 | 'refused or hidden';

/** What the route's declared access says a caller gets. */
function expected(access: RouteAccess, caller: Caller): Expected {
  if (access.needs === 'open') return 'through';
  if (caller.scopes === undefined) return 401;
  if (access.needs === 'token') return 'through';
  if (!caller.scopes.includes(access.needs) && !caller.scopes.includes('admin')) return 403;
  if (caller.limited && access.queueParam !== undefined) return 403;
  // A route that names one thing by id answers 404 for a thing of another namespace: it does not exist.
  if (caller.limited && access.namespaces === 'checked') return 'refused or hidden';
  return 'through';
}

const isStream = (route: RouteEntry): boolean => route.url.endsWith('/stream');

describe('the scope matrix', () => {
  it('every built-in route declares its access', () => {
    const routes = routesOf(app).filter((route) => !route.url.startsWith('/own/'));
    expect(routes.length).toBeGreaterThan(30);
    const undeclared = routes.filter((route) => route.access === undefined);
    expect(undeclared.map((route) => `${route.method} ${route.url}`)).toEqual([]);
    const access = (method: string, url: string) =>
      routes.find((route) => route.method === method && route.url === url)?.access?.needs;
    // The report's cases, spelt out: whatever the table says of the rest.
    expect(access('POST', '/v1/sql')).toBe('admin');
    expect(access('POST', '/v1/migrate')).toBe('admin');
    expect(access('POST', '/v1/initdb')).toBe('admin');
    expect(access('POST', '/v1/cluster/failover')).toBe('admin');
    expect(access('POST', '/v1/queues/:queue/errors/replay')).toBe('admin');
    expect(access('DELETE', '/v1/queues/:queue/errors/:id')).toBe('admin');
    expect(access('GET', '/metrics')).toBe('metrics');
    expect(access('GET', '/v1/dashboard/stream')).toBe('read');
  });

  it('answers every route × caller as the route declares', async () => {
    const failures: string[] = [];
    let checked = 0;
    for (const route of routesOf(app)) {
      if (route.access === undefined) continue;
      for (const caller of CALLERS) {
        const want = expected(route.access, caller);
        // An open stream stays open: streams are let through by the real-request tests.
        if (isStream(route) && want !== 401 && want !== 403) continue;
        const response = await app.inject({
          ...requestFor(route),
          headers: caller.token === undefined ? {} : { authorization: `Bearer ${caller.token}` },
        });
        checked++;
        const status = response.statusCode;
        const ok =
          want === 'through'
            ? status !== 401 && status !== 403 && status < 500
            : want === 'refused or hidden'
              ? status === 403 || status === 404
              : status === want;
        if (!ok) {
          failures.push(`${route.method} ${route.url} by ${caller.name}: ${status}, expected ${want}`);
        }
        // A HEAD answer has no body to read the code from.
        if (want === 403 && status === 403 && route.method !== 'HEAD') {
          expect(response.json<{ code: string }>().code).toBe('FORBIDDEN');
        }
      }
    }
    expect(failures).toEqual([]);
    expect(checked).toBeGreaterThan(200);
  });

  it('names the scope a token lacks, and the queues it may use', async () => {
    const sql = await app.inject({
      method: 'POST',
      url: '/v1/sql',
      headers: { authorization: 'Bearer team-z-token-0123456789' },
      payload: { sql: 'select 1' },
    });
    expect(sql.statusCode).toBe(403);
    expect(sql.json<{ error: string }>().error).toBe(
      'POST /v1/sql needs the "admin" scope; this token has: read, write, metrics',
    );
    const ingest = await app.inject({
      method: 'POST',
      url: '/v1/queues/words/records',
      headers: { authorization: 'Bearer team-z-token-0123456789' },
      payload: 'hello',
    });
    expect(ingest.statusCode).toBe(403);
    expect(ingest.json<{ error: string }>().error).toBe(
      'this token may not use queue "words" (it may use: other-queue)',
    );
  });

  it('leaves out of listings what a limited token may not read', async () => {
    const get = async (url: string, token: string) => {
      const response = await app.inject({
        method: 'GET',
        url,
        headers: { authorization: `Bearer ${token}` },
      });
      expect(response.statusCode, url).toBe(200);
      return response.body;
    };
    const filtered = routesOf(app).filter((route) => route.access?.filtered && !isStream(route));
    expect(filtered.length).toBeGreaterThanOrEqual(4);
    for (const route of filtered) {
      const url = requestFor(route).url;
      expect(await get(url, 'team-z-token-0123456789'), url).not.toMatch(/words|team-a/);
    }
    // The same listings show them to a token that may read everything.
    expect(await get('/v1/queues', 'read-only-0123456789')).toContain('"words"');
    expect(await get('/v1/queues/counters', 'read-only-0123456789')).toContain('"words"');
    expect(await get('/v1/events/listeners', 'read-only-0123456789')).toContain('team-a-listener');
  });

  it('gives a program route that declares nothing the admin scope, and one that declares read read', async () => {
    const status = async (url: string, token: string) =>
      (await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${token}` } })).statusCode;
    expect(await status('/own/undeclared', 'read-only-0123456789')).toBe(403);
    expect(await status('/own/undeclared', 'admin-only-0123456789')).toBe(200);
    expect(await status('/own/read', 'read-only-0123456789')).toBe(200);
    expect(await status('/own/read', 'metrics-only-0123456789')).toBe(403);
  });
});

describe('a route that declares nothing', () => {
  it('is refused to every caller, even with no token configured', async () => {
    const bare = fastify();
    bare.setErrorHandler((error, _request, reply) =>
      reply.code(error instanceof BatonError ? error.status : 500).send({ error: errorMessage(error) }),
    );
    registerRouteAccess(bare);
    registerAuth(bare, { ...node.config.http, token: undefined, tokens: [] });
    bare.get('/forgotten', () => ({ reached: true }));
    ownRoutesFromNow(bare);
    await bare.ready();
    const response = await bare.inject({ method: 'GET', url: '/forgotten' });
    expect(response.statusCode).toBe(403);
    expect(response.body).toContain('GET /forgotten declares no access');
    await bare.close();
  });
});

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
