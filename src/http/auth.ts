// Who may call what: the bearer token (or the dashboard's session) of a request, the scopes, namespaces and
// queues of its token, and the access every route declares with itself (`needs(...)` in its options), all
// checked in one hook. A route that declares nothing is refused, so a route added later fails closed.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';

import type { FastifyInstance, FastifyRequest, RouteShorthandOptions } from 'fastify';

import type { HttpConfig, TokenScope } from '../config/types.js';
import { ForbiddenError, TooManyRequestsError, UnauthorizedError } from '../errors.js';

/** What a route needs, declared with it: `app.get(url, needs('read'), handler)`. */
export interface RouteAccess {
  /** `open`: no token; `token`: any valid token; a scope: a token that has it (`admin` has every scope). */
  readonly needs: 'open' | 'token' | TokenScope;
  /** The path parameter naming the one queue the route reaches: a token limited to other queues gets 403. */
  readonly queueParam?: string;
  /** The route checks each namespace the request names against the token's (403 for another one). */
  readonly namespaces?: 'checked';
  /** The route lists things of every queue or namespace and leaves out those the token may not read. */
  readonly filtered?: true;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route (see RouteAccess); a route without it is refused. */
    access?: RouteAccess;
  }
}

/** Route options declaring what a route needs. */
export function needs(
  what: RouteAccess['needs'],
  more: Omit<RouteAccess, 'needs'> = {},
): RouteShorthandOptions & { config: { access: RouteAccess } } {
  return { config: { access: { needs: what, ...more } } };
}

/** What routes of a program's own (RouteRegistrar) need when they declare nothing. */
export const OWN_ROUTE_ACCESS: RouteAccess = { needs: 'admin' };

/** What one request may do: the scopes, namespaces and queues of its token. */
interface Grant {
  readonly scopes: ReadonlySet<TokenScope>;
  /** Undefined: every namespace. */
  readonly namespaces: readonly string[] | undefined;
  /** Undefined: every queue. */
  readonly queues: readonly string[] | undefined;
}

const EVERYTHING: Grant = {
  scopes: new Set(['admin', 'read', 'write', 'metrics']),
  namespaces: undefined,
  queues: undefined,
};
/** The grant of a request that presented no token (an open route): nothing. */
const NOTHING: Grant = { scopes: new Set(), namespaces: [], queues: [] };

const requestGrants = new WeakMap<FastifyRequest, Grant>();
/** Apps whose own routes are registered: a route that declares nothing from then on is a program's own. */
const ownRoutesFollow = new WeakSet<FastifyInstance>();

/**
 * The namespaces the request's token may read, write and stream; undefined when it may use all of them
 * (no token configured, `[http] token`, or a `[[http.tokens]]` entry limited by neither list).
 */
export function allowedNamespaces(request: FastifyRequest): readonly string[] | undefined {
  return (requestGrants.get(request) ?? NOTHING).namespaces;
}

/** The queues the request's token may use; undefined when it may use all of them. */
export function allowedQueues(request: FastifyRequest): readonly string[] | undefined {
  return (requestGrants.get(request) ?? NOTHING).queues;
}

/** Whether the request's token may use `queue`. */
export function mayUseQueue(request: FastifyRequest, queue: string): boolean {
  const queues = allowedQueues(request);
  return queues === undefined || queues.includes(queue);
}

/**
 * Gives the routes registered from now on that declare nothing OWN_ROUTE_ACCESS: called once the built-in
 * routes are registered, before a program's own. A built-in route that declares nothing stays refused.
 */
export function ownRoutesFromNow(app: FastifyInstance): void {
  ownRoutesFollow.add(app);
}

/** Gives undeclared routes of a program's own their default; call before any route is registered. */
export function registerRouteAccess(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    if (route.config?.access === undefined && ownRoutesFollow.has(app)) {
      route.config = { ...route.config, access: OWN_ROUTE_ACCESS };
    }
  });
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
  // A refusal is passed to done(): the server's error handler answers it, as for every route.
  app.addHook('onRequest', (request, _reply, done) => {
    // No route: a valid token is needed to learn so (404), as for every route that is not open.
    const access: RouteAccess | undefined = request.is404
      ? { needs: 'token' }
      : request.routeOptions.config.access;
    const route = `${request.method} ${request.routeOptions.url ?? ''}`;
    if (access === undefined) {
      request.log.error({ route }, 'route declares no access (needs): refused');
      return done(new ForbiddenError(`${route} declares no access; refused`));
    }
    if (access.needs === 'open') return done();
    let grant: Grant = EVERYTHING;
    if (digests.length > 0) {
      const presented = bearerToken(request);
      if (presented !== undefined && guesses.blocked(request)) return done(tooManyGuesses());
      // The dashboard (a browser, whose EventSource cannot send a header) signs in for a session cookie.
      const found = presented === undefined ? sessions.find(request) : match(presented);
      if (found === undefined) {
        if (presented !== undefined) guesses.failed(request);
        return done(
          new UnauthorizedError(
            presented === undefined
              ? 'missing bearer token (Authorization: Bearer <token>)'
              : 'invalid token',
          ),
        );
      }
      grant = found;
    }
    requestGrants.set(request, grant);
    const refusal = refusalOf(grant, access, request, route);
    done(refusal);
  });
}

/** Why a grant may not call a route as the request asks; undefined when it may. */
function refusalOf(
  grant: Grant,
  access: RouteAccess,
  request: FastifyRequest,
  route: string,
): ForbiddenError | undefined {
  if (access.needs !== 'token' && access.needs !== 'open' && !hasScope(grant, access.needs)) {
    const held = [...grant.scopes].join(', ') || 'none';
    return new ForbiddenError(`${route} needs the "${access.needs}" scope; this token has: ${held}`);
  }
  if (access.queueParam !== undefined) {
    const value: unknown = isRecord(request.params) ? request.params[access.queueParam] : undefined;
    const queue = typeof value === 'string' ? value : '';
    if (grant.queues !== undefined && !grant.queues.includes(queue)) {
      const allowed = grant.queues.length > 0 ? grant.queues.join(', ') : 'none';
      return new ForbiddenError(`this token may not use queue "${queue}" (it may use: ${allowed})`);
    }
  }
  return undefined;
}

function hasScope(grant: Grant, scope: TokenScope): boolean {
  return grant.scopes.has('admin') || grant.scopes.has(scope);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
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
  app.get(SESSION_PATH, needs('token'), () => ({
    authenticated: true,
    token_required: match !== undefined,
  }));
  app.post<{ Body: unknown }>(SESSION_PATH, needs('open'), async (request, reply) => {
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
  app.delete(SESSION_PATH, needs('token'), (request, reply) => {
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

/** `[http] token` has every scope on everything; each `[[http.tokens]]` entry what config resolved for it. */
function configuredGrants(config: HttpConfig): Array<Grant & { token: string }> {
  return [
    ...(config.token ? [{ ...EVERYTHING, token: config.token }] : []),
    ...config.tokens.map((entry) => ({
      token: entry.token,
      scopes: new Set(entry.scopes),
      namespaces: entry.namespaces,
      queues: entry.queues,
    })),
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
