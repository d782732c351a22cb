// Authentication on every route: with a token configured, each route the HTTP API has (found by walking
// the app's route table, so that a route added later is covered too) refuses a request without a token
// and with a wrong one, and lets the right token through. Only the probes, the dashboard's page and
// assets, and the sign-in are open (the routes that declare `needs('open')`, and no other). What each
// scope may do on every route is the scope matrix of scopes.test.ts. Names from users reach SQL only as
// parameters.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { buildHttpApp, routesOf } from '../../src/http/server.js';
import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';

const handler = fileURLToPath(new URL('../node/handlers/words.ts', import.meta.url));
const TOKEN = 'security-token-0123456789';
const OPEN = new Set([
  'GET /healthz',
  'GET /readyz',
  'GET /',
  'GET /dashboard/app.js',
  'GET /dashboard/dom.js',
  'GET /dashboard/dag.js',
  'GET /dashboard/workflows.js',
  'GET /dashboard/style.css',
  'POST /v1/session',
]);
const log = createLogger({ level: 'silent' });

let dir: string;
let node: BatonNode;
let app: FastifyInstance;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-security-'));
  node = await startNode(
    {
      node: { name: 'secure', data_dir: dir },
      http: { port: 0, token: TOKEN, tokens: [{ token: 'limited-token-0123', namespaces: ['team-a'] }] },
      queues: { words: { handler } },
    },
    { log },
  );
  app = buildHttpApp(node, node.config.http, log);
  await app.ready();
});

afterAll(async () => {
  await app.close();
  await node.stop();
  await rm(dir, { recursive: true, force: true });
});

/** A concrete URL for a route pattern: parameters get harmless values. */
function concrete(url: string): string {
  return url.replace(/:(\w+)/g, (_match, name: string) =>
    name === 'queue' ? 'words' : name === 'id' ? '1' : 'x',
  );
}

describe('tokens on every route', () => {
  it('finds the routes of every part of the API', () => {
    const routes = routesOf(app).map((route) => `${route.method} ${route.url}`);
    for (const expected of [
      'POST /v1/queues/:queue/records',
      'GET /v1/queues',
      'POST /v1/sql',
      'GET /v1/cluster',
      'GET /metrics',
      'GET /v1/dashboard/stream',
      'POST /v1/events',
      'GET /v1/events/stream',
    ]) {
      expect(routes).toContain(expected);
    }
  });

  it('declares open only the probes, the dashboard page and assets, and the sign-in', () => {
    const open = routesOf(app)
      .filter((route) => route.method !== 'HEAD' && route.access?.needs === 'open')
      .map((route) => `${route.method} ${route.url}`);
    expect(new Set(open)).toEqual(OPEN);
  });

  it('refuses every route but the open ones without a token or with a wrong one', async () => {
    const guarded = routesOf(app).filter(
      (route) => route.method !== 'HEAD' && !OPEN.has(`${route.method} ${route.url}`),
    );
    expect(guarded.length).toBeGreaterThan(15);
    for (const route of guarded) {
      const url = concrete(route.url);
      for (const headers of [{}, { authorization: 'Bearer wrong-token-0000' }, { authorization: TOKEN }]) {
        const response = await app.inject({ method: route.method as 'GET', url, headers });
        expect(response.statusCode, `${route.method} ${route.url} with ${JSON.stringify(headers)}`).toBe(401);
        expect(response.json<{ error: string }>().error).toMatch(/token/);
      }
    }
  });

  it('lets the right token through on every route', async () => {
    for (const route of routesOf(app).filter((candidate) => candidate.method === 'GET')) {
      if (route.url.includes('stream')) continue; // streams stay open; covered by their own tests
      const response = await app.inject({
        method: 'GET',
        url: concrete(route.url),
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(response.statusCode, `GET ${route.url}`).not.toBe(401);
      expect(response.statusCode, `GET ${route.url}: ${response.body}`).toBeLessThan(500);
    }
  });

  it('serves the open routes without a token', async () => {
    const urls = [...OPEN].filter((route) => route.startsWith('GET ')).map((route) => route.slice(4));
    for (const url of urls) {
      expect((await app.inject({ method: 'GET', url })).statusCode, url).toBe(200);
    }
  });
});

describe('token guessing', () => {
  it('refuses an address that presented 20 wrong tokens within a minute, but not loopback', async () => {
    const from = (remoteAddress: string, token: string) =>
      app.inject({
        method: 'GET',
        url: '/v1/queues',
        remoteAddress,
        headers: { authorization: `Bearer ${token}` },
      });
    for (let attempt = 0; attempt < 20; attempt++) {
      expect((await from('10.9.8.7', `wrong-${attempt}-000000`)).statusCode).toBe(401);
    }
    const blocked = await from('10.9.8.7', TOKEN);
    expect(blocked.statusCode).toBe(429);
    expect(blocked.headers['retry-after']).toBe('60');
    const signIn = await app.inject({
      method: 'POST',
      url: '/v1/session',
      remoteAddress: '10.9.8.7',
      payload: { token: TOKEN },
    });
    expect(signIn.statusCode).toBe(429);
    expect((await from('10.9.8.6', TOKEN)).statusCode).toBe(200);
    for (let attempt = 0; attempt < 25; attempt++) await from('127.0.0.1', 'wrong-token-000000');
    expect((await from('127.0.0.1', TOKEN)).statusCode).toBe(200);
  });
});

describe('names from users', () => {
  it('reach SQL only as parameters: hostile queue names and event keys change nothing', async () => {
    const hostile = `words'; DROP TABLE words; --`;
    const ingest = await app.inject({
      method: 'POST',
      url: `/v1/queues/${encodeURIComponent(hostile)}/records`,
      headers: { authorization: `Bearer ${TOKEN}` },
      payload: 'x',
    });
    expect(ingest.statusCode).toBe(404);
    const events = await app.inject({
      method: 'POST',
      url: '/v1/events',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      payload: { key: `k'); DROP TABLE baton_events; --`, value: `"; DELETE FROM baton_events; --` },
    });
    expect(events.statusCode).toBe(201);
    const listed = await app.inject({
      method: 'GET',
      url: `/v1/events?keys=${encodeURIComponent(`k'); DROP TABLE baton_events; --`)}&from=0`,
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(listed.statusCode).toBe(200);
    expect(listed.body).toContain('DROP TABLE baton_events');
    const tables = await node.admin.sql(
      `SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name IN ('words', 'baton_events')`,
    );
    expect(tables.rows[0]?.['n']).toBe(2);
  });
});
