// The browser-facing defences over real sockets: a Host header that does not name the node is refused (the
// shape of a DNS-rebinding page's request), a state-changing request from another origin is refused, the
// session cookie alone needs the dashboard's CSRF header, and clients that no page can imitate (no Origin,
// a bearer token) keep working. Also: a request body sent slowly is cut off after request_timeout_ms while
// streams stay open, and X-Forwarded-Proto from a trusted proxy makes the session cookie Secure.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { HttpConfig } from '../../src/config/types.js';
import { buildHttpApp } from '../../src/http/server.js';
import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';

const handler = fileURLToPath(new URL('../node/handlers/words.ts', import.meta.url));
const TOKEN = 'browser-token-0123456789';
const log = createLogger({ level: 'silent' });

let dir: string;
let node: BatonNode;
const apps: FastifyInstance[] = [];

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request over a real socket, with any headers (Host included, which fetch does not let one set). */
function send(
  base: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<Answer> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text }),
        );
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}

/** Posts a record (or NDJSON records) to the queue `words`. */
const ingest = (base: string, headers: Record<string, string>, body: string): Promise<Answer> =>
  send(base, 'POST', '/v1/queues/words/records', headers, body);

/** Signs in with the token: the answer's Set-Cookie holds the session. */
const signIn = (base: string, headers: Record<string, string> = {}): Promise<Answer> =>
  send(
    base,
    'POST',
    '/v1/session',
    { 'content-type': 'application/json', ...headers },
    JSON.stringify({ token: TOKEN }),
  );

const cookieOf = (answer: Answer): string => String(answer.headers['set-cookie']?.[0]);

/** The `name=value` of the session cookie set by a sign-in. */
const sessionOf = (answer: Answer): string => cookieOf(answer).split(';')[0] ?? '';

const code = (answer: Answer): unknown => (JSON.parse(answer.body) as { code?: unknown }).code;

const stored = async (word: string): Promise<number> =>
  Number(
    (await node.admin.sql(`SELECT count(*)::int AS n FROM words WHERE word = $1`, [word])).rows[0]?.['n'],
  );

/** Serves the node's API on another port with other [http] settings (one store, many configurations). */
async function serve(http: Partial<HttpConfig>): Promise<string> {
  const app = buildHttpApp(node, { ...node.config.http, ...http }, log);
  apps.push(app);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  return `http://127.0.0.1:${address.port}`;
}

/** The node's own host:port for a base URL, as a browser sends it in Host and Origin. */
const hostOf = (base: string): string => new URL(base).host;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-browser-'));
  node = await startNode(
    { node: { name: 'browser', data_dir: dir }, http: { port: 0 }, queues: { words: { handler } } },
    { log },
  );
});

afterAll(async () => {
  for (const app of apps) await app.close();
  await node?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('the Host check', () => {
  it('refuses a Host that does not name the node (DNS rebinding), /v1/sql included, before any route runs', async () => {
    const base = node.address ?? '';
    const port = new URL(base).port;
    for (const host of ['attacker.example', `attacker.example:${port}`, `127.0.0.1.nip.io:${port}`]) {
      const sql = await send(
        base,
        'POST',
        '/v1/sql',
        { host, 'content-type': 'application/json' },
        '{"sql":"CREATE TABLE rebound (x int)"}',
      );
      expect(sql.status, host).toBe(421);
      expect(code(sql)).toBe('UNKNOWN_HOST');
      expect(sql.body).toContain('[http] hosts');
      const posted = await ingest(base, { host }, 'rebound');
      expect(posted.status).toBe(421);
      expect((await send(base, 'GET', '/v1/queues', { host })).status).toBe(421);
      expect((await send(base, 'GET', '/', { host })).status).toBe(421);
    }
    expect(await stored('rebound')).toBe(0);
    const tables = await node.admin.sql(
      `SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name = 'rebound'`,
    );
    expect(tables.rows[0]?.['n']).toBe(0);
  });

  it('accepts the loopback names on any port, and answers the probes by any name', async () => {
    const base = node.address ?? '';
    const port = new URL(base).port;
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      `LocalHost:${port}`,
      `[::1]:${port}`,
      '127.0.0.2',
      'localhost',
    ]) {
      expect((await send(base, 'GET', '/v1/queues', { host })).status, host).toBe(200);
    }
    // Load balancers probe by address, with whatever Host they like.
    expect((await send(base, 'GET', '/healthz', { host: '10.1.2.3:8080' })).status).toBe(200);
    expect((await send(base, 'GET', '/readyz', { host: 'attacker.example' })).status).toBe(200);
  });

  it('accepts the names of [http] hosts, and still the loopback ones', async () => {
    const base = await serve({ hosts: ['baton.example.com'] });
    const port = new URL(base).port;
    expect((await send(base, 'GET', '/v1/queues', { host: `baton.example.com:${port}` })).status).toBe(200);
    expect((await send(base, 'GET', '/v1/queues', { host: 'BATON.example.com' })).status).toBe(200);
    expect((await send(base, 'GET', '/v1/queues', { host: `localhost:${port}` })).status).toBe(200);
    expect((await send(base, 'GET', '/v1/queues', { host: 'other.example.com' })).status).toBe(421);
    // Its own origin under that name is same-origin.
    const posted = await ingest(
      base,
      { host: `baton.example.com:${port}`, origin: `http://baton.example.com:${port}` },
      'named',
    );
    expect(posted.status).toBe(202);
    expect(await stored('named')).toBe(1);
  });

  it('accepts any name with hosts = "any" (the default off loopback, where a token is required)', async () => {
    const base = await serve({ hosts: 'any', token: TOKEN });
    const answer = await send(base, 'GET', '/v1/queues', {
      host: 'baton.internal:8080',
      authorization: `Bearer ${TOKEN}`,
    });
    expect(answer.status).toBe(200);
  });
});

describe('the Origin check on a tokenless node', () => {
  it('refuses a state-changing request from another origin, whatever its content type', async () => {
    const base = node.address ?? '';
    const port = new URL(base).port;
    const foreign = [
      `http://localhost:${port}`, // another site's name for the same port
      'http://127.0.0.1:1', // another port of the same host
      'https://127.0.0.1', // another scheme
      'null', // a sandboxed page or a file
    ];
    for (const origin of foreign) {
      for (const type of ['text/plain', 'application/x-ndjson', 'application/json']) {
        const answer = await ingest(base, { origin, 'content-type': type }, 'foreign');
        expect(answer.status, `${origin} ${type}`).toBe(403);
        expect(code(answer)).toBe('FORBIDDEN');
        expect(answer.body).toContain('cross-origin request refused');
      }
      const sql = await send(
        base,
        'POST',
        '/v1/sql',
        { origin, 'content-type': 'application/json' },
        '{"sql":"select 1"}',
      );
      expect(sql.status).toBe(403);
    }
    // Lacking an Origin, the browser's Sec-Fetch-Site says where the request comes from.
    for (const site of ['cross-site', 'same-site']) {
      const answer = await ingest(base, { 'sec-fetch-site': site }, 'foreign');
      expect(answer.status, site).toBe(403);
    }
    expect(await stored('foreign')).toBe(0);
  });

  it('accepts its own origin, and clients without an Origin (curl, the CLI, producers)', async () => {
    const base = node.address ?? '';
    const own = `http://${hostOf(base)}`;
    expect((await ingest(base, { origin: own }, 'own')).status).toBe(202);
    expect((await ingest(base, { 'sec-fetch-site': 'same-origin' }, 'own')).status).toBe(202);
    expect((await ingest(base, { 'content-type': 'application/x-ndjson' }, 'plain\nplain')).status).toBe(202);
    const sql = await fetch(`${base}/v1/sql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sql: 'select 1 as one' }),
    });
    expect(sql.status).toBe(200);
    expect(await stored('own')).toBe(2);
    expect(await stored('plain')).toBe(2);
    // Reads are not state-changing: a foreign Origin may ask (the browser keeps the answer from the page).
    expect((await send(base, 'GET', '/v1/queues', { origin: 'http://elsewhere.example' })).status).toBe(200);
  });
});

describe('the session cookie', () => {
  let base: string;
  let cookie: string;

  beforeAll(async () => {
    base = await serve({ token: TOKEN });
    const signedIn = await signIn(base);
    expect(signedIn.status).toBe(204);
    cookie = sessionOf(signedIn);
    expect(cookie).toMatch(/^baton_session=/);
  });

  it('alone refuses ingest, migrate, initdb and a bodiless replay', async () => {
    for (const [path, body] of [
      ['/v1/queues/words/records', 'cookie-alone'],
      ['/v1/migrate', undefined],
      ['/v1/initdb', undefined],
      ['/v1/queues/words/errors/replay', undefined],
    ] as const) {
      const answer = await send(base, 'POST', path, { cookie }, body);
      expect(answer.status, path).toBe(403);
      expect(answer.body).toContain('x-baton-csrf');
    }
    expect((await send(base, 'DELETE', '/v1/queues/words/errors/1', { cookie })).status).toBe(403);
    // From a page of another port of the same host (same site: SameSite=Strict lets the cookie through).
    const other = await ingest(base, { cookie, origin: 'http://127.0.0.1:1' }, 'cookie-alone');
    expect(other.status).toBe(403);
    // The CSRF header does not make another origin the node's own.
    const both = await ingest(
      base,
      { cookie, origin: 'http://127.0.0.1:1', 'x-baton-csrf': '1' },
      'cookie-alone',
    );
    expect(both.status).toBe(403);
    expect(await stored('cookie-alone')).toBe(0);
  });

  it('with the CSRF header or the own Origin works, as does a bearer token without an Origin', async () => {
    expect((await ingest(base, { cookie, 'x-baton-csrf': '1' }, 'signed')).status).toBe(202);
    expect((await ingest(base, { cookie, origin: `http://${hostOf(base)}` }, 'signed')).status).toBe(202);
    expect((await ingest(base, { authorization: `Bearer ${TOKEN}`, cookie }, 'signed')).status).toBe(202);
    expect((await send(base, 'POST', '/v1/migrate', { cookie, 'x-baton-csrf': '1' })).status).toBe(200);
    expect(await stored('signed')).toBe(3);
  });

  it('signs out without the CSRF header (the Origin check alone guards the session routes)', async () => {
    const signedIn = await signIn(base);
    const second = sessionOf(signedIn);
    expect(
      (await send(base, 'DELETE', '/v1/session', { cookie: second, origin: 'http://127.0.0.1:1' })).status,
    ).toBe(403);
    expect((await send(base, 'GET', '/v1/session', { cookie: second })).status).toBe(200);
    expect((await send(base, 'DELETE', '/v1/session', { cookie: second })).status).toBe(204);
    expect((await send(base, 'GET', '/v1/session', { cookie: second })).status).toBe(401);
  });
});

describe('Secure cookie behind a TLS proxy', () => {
  it('is Secure when a trusted proxy says https, and the page of https://<host> is same-origin', async () => {
    const base = await serve({ token: TOKEN, trustProxy: ['loopback'] });
    const https = await signIn(base, { 'x-forwarded-proto': 'https' });
    expect(https.status).toBe(204);
    expect(cookieOf(https)).toMatch(/; Secure/);
    expect(cookieOf(await signIn(base, {}))).not.toMatch(/Secure/);
    const session = sessionOf(https);
    const posted = await ingest(
      base,
      { cookie: session, 'x-forwarded-proto': 'https', origin: `https://${hostOf(base)}` },
      'proxied',
    );
    expect(posted.status).toBe(202);
    expect(await stored('proxied')).toBe(1);
  });

  it('ignores X-Forwarded-Proto without trust_proxy, or from a peer it does not name', async () => {
    for (const trustProxy of [false, ['10.0.0.1']]) {
      const base = await serve({ token: TOKEN, trustProxy });
      const answer = await signIn(base, { 'x-forwarded-proto': 'https' });
      expect(answer.status).toBe(204);
      expect(cookieOf(answer), JSON.stringify(trustProxy)).not.toMatch(/Secure/);
      // An https page is then another origin; the refusal says what to set.
      const posted = await ingest(
        base,
        { authorization: `Bearer ${TOKEN}`, 'x-forwarded-proto': 'https', origin: `https://${hostOf(base)}` },
        'unproxied',
      );
      expect(posted.status).toBe(403);
      expect(posted.body).toContain('trust_proxy');
    }
    expect(await stored('unproxied')).toBe(0);
  });
});

/** A raw connection: what the server sent, and when it closed the socket (ms after connecting). */
interface RawConnection {
  readonly socket: net.Socket;
  received(): string;
  readonly closed: Promise<number>;
}

function connect(base: string): Promise<RawConnection> {
  const url = new URL(base);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: url.hostname, port: Number(url.port) });
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    const closed = new Promise<number>((done) => socket.on('close', () => done(Date.now() - started)));
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve({ socket, received: () => text, closed }));
    socket.once('error', reject);
  });
}

/** Writes `text` one character every `everyMs` until the socket closes or the text is sent. */
async function trickle(connection: RawConnection, text: string, everyMs: number): Promise<void> {
  for (const char of text) {
    if (connection.socket.destroyed || !connection.socket.writable) return;
    connection.socket.write(char);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

describe('request timeouts', () => {
  const TIMEOUT_MS = 1_000;
  /** Node checks the limits every quarter of the headers limit here (250 ms); the rest is the machine's load. */
  const CUT_WITHIN_MS = 15_000;
  let base: string;
  let tokenBase: string;

  beforeAll(async () => {
    base = await serve({ requestTimeoutMs: TIMEOUT_MS });
    tokenBase = await serve({ requestTimeoutMs: TIMEOUT_MS, token: TOKEN });
  });

  it('cuts off a body sent slowly with 408 and stores nothing', async () => {
    const connection = await connect(base);
    const body = 'slowbody'.repeat(50); // 400 bytes at one per 100 ms: 40 s if it were let through
    connection.socket.write(
      `POST /v1/queues/words/records HTTP/1.1\r\nHost: ${hostOf(base)}\r\nContent-Type: text/plain\r\n` +
        `Content-Length: ${body.length}\r\n\r\n`,
    );
    void trickle(connection, body, 100);
    const closedAfter = await connection.closed;
    expect(connection.received()).toMatch(/^HTTP\/1\.1 408 /);
    expect(connection.received()).toContain('"code":"REQUEST_TIMEOUT"');
    expect(connection.received()).toContain('request_timeout_ms');
    expect(closedAfter).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
    expect(closedAfter).toBeLessThan(CUT_WITHIN_MS);
    expect(await stored('slowbody'.repeat(50))).toBe(0);
  });

  it('cuts off an unauthenticated slow body and a client that trickles its headers', async () => {
    const unauthenticated = await connect(tokenBase);
    unauthenticated.socket.write(
      `POST /v1/queues/words/records HTTP/1.1\r\nHost: ${hostOf(tokenBase)}\r\nContent-Length: 400\r\n\r\nx`,
    );
    void trickle(unauthenticated, 'y'.repeat(399), 100);
    const headers = await connect(base);
    void trickle(
      headers,
      `GET /v1/queues HTTP/1.1\r\nHost: ${hostOf(base)}\r\nX-Slow: ${'z'.repeat(400)}\r\n\r\n`,
      100,
    );
    expect(await unauthenticated.closed).toBeLessThan(CUT_WITHIN_MS);
    expect(await headers.closed).toBeLessThan(CUT_WITHIN_MS);
    expect(headers.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('lets a body that arrives in parts within the limit through', async () => {
    const connection = await connect(base);
    connection.socket.write(
      `POST /v1/queues/words/records HTTP/1.1\r\nHost: ${hostOf(base)}\r\nContent-Length: 8\r\nConnection: close\r\n\r\n`,
    );
    await trickle(connection, 'partsok!', 20);
    await connection.closed;
    expect(connection.received()).toMatch(/^HTTP\/1\.1 202 /);
    expect(await stored('partsok!')).toBe(1);
  });

  it('never cuts a stream that lasts longer than the limit', async () => {
    // Snapshots come every second: read until the stream has lasted four times the limit.
    const lasted = 4 * TIMEOUT_MS + 500;
    const snapshots = await new Promise<number>((resolve, reject) => {
      const opened = Date.now();
      const request = http.get(`${base}/v1/dashboard/stream`, (response) => {
        expect(response.statusCode).toBe(200);
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          text += chunk;
          if (Date.now() - opened < lasted) return;
          resolve(text.split('\ndata: ').length - 1);
          request.destroy();
        });
        response.on('close', () => reject(new Error(`the stream ended after ${Date.now() - opened} ms`)));
      });
      request.on('error', reject);
    });
    expect(snapshots).toBeGreaterThanOrEqual(3);
  });
});
