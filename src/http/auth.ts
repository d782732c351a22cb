// Bearer-token check for every route but the health probes, the namespaces a request's token may use, and
// the loopback rule of the `sql` endpoint.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';

import type { FastifyInstance, FastifyRequest } from 'fastify';

import type { HttpConfig } from '../config/types.js';
import { TooManyRequestsError, UnauthorizedError } from '../errors.js';

/** Routes open without a token: the probes, and the dashboard's page and assets (they hold no data). */
const OPEN_ROUTES = new Set(['/healthz', '/readyz', '/', '/dashboard/app.js', '/dashboard/style.css']);

/** The namespaces each authenticated request may use; absent: every namespace. */
const grantedNamespaces = new WeakMap<FastifyRequest, readonly string[]>();

/**
 * The namespaces the request's token may read, write and stream; undefined when it may use all of them
 * (no token configured, `[http] token`, or a `[[http.tokens]]` entry without `namespaces`).
 */
export function allowedNamespaces(request: FastifyRequest): readonly string[] | undefined {
  return grantedNamespaces.get(request);
}

export function registerAuth(app: FastifyInstance, config: HttpConfig): void {
  const grants = configuredGrants(config);
  const digests = grants.map((grant) => digest(grant.token));
  const sessions = new Sessions();
  const guesses = new GuessLimit();
  /** The grant of a presented token; undefined when it matches none. */
  const match = (presented: string): Grant | undefined => {
    const candidate = digest(presented);
    // Compare with every token (no early exit), so that the time taken does not tell which one matched.
    let matched = -1;
    for (const [index, known] of digests.entries()) {
      if (timingSafeEqual(known, candidate) && matched < 0) matched = index;
    }
    return grants[matched];
  };
  registerSessionRoutes(app, sessions, guesses, digests.length > 0 ? match : undefined);
  if (digests.length === 0) return;
  // A refusal is passed to done(): the server's error handler answers it, as for every route.
  app.addHook('onRequest', (request, _reply, done) => {
    const path = request.url.split('?')[0] ?? '';
    if (OPEN_ROUTES.has(path) || (path === SESSION_PATH && request.method === 'POST')) return done();
    const presented = bearerToken(request);
    if (presented !== undefined && guesses.blocked(request)) return done(tooManyGuesses());
    // The dashboard (a browser, whose EventSource cannot send a header) signs in for a session cookie.
    const grant = presented === undefined ? sessions.find(request) : match(presented);
    if (grant === undefined) {
      if (presented !== undefined) guesses.failed(request);
      return done(
        new UnauthorizedError(
          presented === undefined ? 'missing bearer token (Authorization: Bearer <token>)' : 'invalid token',
        ),
      );
    }
    if (grant.namespaces) grantedNamespaces.set(request, grant.namespaces);
    done();
  });
}

/**
 * GET /v1/session tells whether the request is signed in (it answers 401 otherwise); POST /v1/session
 * {token} exchanges a token for an HttpOnly SameSite=Strict cookie; DELETE /v1/session signs out.
 */
function registerSessionRoutes(
  app: FastifyInstance,
  sessions: Sessions,
  guesses: GuessLimit,
  match: ((token: string) => Grant | undefined) | undefined,
): void {
  app.get(SESSION_PATH, () => ({ authenticated: true, token_required: match !== undefined }));
  app.post<{ Body: unknown }>(SESSION_PATH, async (request, reply) => {
    if (match === undefined) return reply.code(204).send();
    if (guesses.blocked(request)) throw tooManyGuesses();
    const body = request.body as { token?: unknown } | undefined;
    const grant = typeof body?.token === 'string' ? match(body.token) : undefined;
    if (grant === undefined) {
      guesses.failed(request);
      throw new UnauthorizedError('invalid token');
    }
    return reply
      .code(204)
      .header('set-cookie', sessions.open(grant, request.protocol === 'https'))
      .send();
  });
  app.delete(SESSION_PATH, (request, reply) => {
    sessions.close(request);
    return reply.code(204).header('set-cookie', Sessions.clearCookie).send();
  });
}

/** Wrong tokens one client address may present per window before it is refused for the rest of it. */
const GUESSES_PER_WINDOW = 20;
const GUESS_WINDOW_MS = 60_000;

/**
 * Slows down token guessing: a client address (other than loopback) that presented GUESSES_PER_WINDOW wrong
 * tokens within GUESS_WINDOW_MS is answered 429 until the window ends.
 */
class GuessLimit {
  readonly #failures = new Map<string, { count: number; until: number }>();

  blocked(request: FastifyRequest): boolean {
    const entry = this.#failures.get(request.ip);
    if (entry === undefined) return false;
    if (entry.until < Date.now()) {
      this.#failures.delete(request.ip);
      return false;
    }
    return entry.count >= GUESSES_PER_WINDOW;
  }

  failed(request: FastifyRequest): void {
    if (isLoopback(request.ip)) return;
    const now = Date.now();
    if (this.#failures.size > 10_000) {
      for (const [address, entry] of this.#failures) if (entry.until < now) this.#failures.delete(address);
    }
    const entry = this.#failures.get(request.ip);
    if (entry === undefined || entry.until < now) {
      this.#failures.set(request.ip, { count: 1, until: now + GUESS_WINDOW_MS });
    } else {
      entry.count++;
    }
  }
}

function tooManyGuesses(): TooManyRequestsError {
  return new TooManyRequestsError(
    'too many wrong tokens from this address; try again later',
    GUESS_WINDOW_MS / 1000,
  );
}

const SESSION_PATH = '/v1/session';
const SESSION_COOKIE = 'baton_session';
/** A dashboard session lasts this long, then the page asks for the token again. */
const SESSION_TTL_MS = 12 * 3_600_000;

/** Dashboard sessions of this node, in memory: a restart signs everyone out. */
class Sessions {
  static readonly clearCookie = `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`;
  readonly #open = new Map<string, { grant: Grant; expires: number }>();

  open(grant: Grant, secure: boolean): string {
    const now = Date.now();
    for (const [id, session] of this.#open) if (session.expires < now) this.#open.delete(id);
    const id = randomBytes(32).toString('base64url');
    this.#open.set(id, { grant, expires: now + SESSION_TTL_MS });
    return (
      `${SESSION_COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_TTL_MS / 1000}` +
      (secure ? '; Secure' : '')
    );
  }

  find(request: FastifyRequest): Grant | undefined {
    const id = sessionId(request);
    const session = id === undefined ? undefined : this.#open.get(id);
    if (session === undefined || session.expires < Date.now()) return undefined;
    return session.grant;
  }

  close(request: FastifyRequest): void {
    const id = sessionId(request);
    if (id !== undefined) this.#open.delete(id);
  }
}

function sessionId(request: FastifyRequest): string | undefined {
  const header = request.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === SESSION_COOKIE) return value.join('=');
  }
  return undefined;
}

/** True when the request carries the dashboard's session cookie (valid or not). */
export function hasSessionCookie(request: FastifyRequest): boolean {
  return sessionId(request) !== undefined;
}

/** True when a token is configured (so requests were authenticated) or the request comes from loopback. */
export function trustedRequest(request: FastifyRequest, config: HttpConfig): boolean {
  return configuredTokens(config).length > 0 || isLoopback(request.socket.remoteAddress ?? '');
}

export function isLoopback(address: string): boolean {
  if (address === '::1' || address === 'localhost') return true;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

function configuredTokens(config: HttpConfig): string[] {
  return configuredGrants(config).map((grant) => grant.token);
}

interface Grant {
  readonly token: string;
  /** Undefined: every namespace. */
  readonly namespaces: readonly string[] | undefined;
}

function configuredGrants(config: HttpConfig): Grant[] {
  return [
    ...(config.token ? [{ token: config.token, namespaces: undefined }] : []),
    ...config.tokens.map((entry) => ({ token: entry.token, namespaces: entry.namespaces })),
  ];
}

function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (!header) return undefined;
  const match = /^Bearer\s+(.+)$/i.exec(header);
  return match?.[1]?.trim();
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}
