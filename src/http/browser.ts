// Defences against web pages. A browser lets any page send requests to any address, with the cookies of that
// address: the Host check refuses a page whose own name was re-pointed at the node (DNS rebinding), and the
// Origin check refuses a state-changing request that a page of another origin made (CSRF, or a tokenless node
// reached from a web site). Clients that no page can imitate (curl, the CLI, other nodes) are unaffected.
import type { FastifyInstance, FastifyRequest } from 'fastify';

import { bareHostName, isLoopbackHost } from '../config/load.js';
import type { HttpConfig } from '../config/types.js';
import type { BatonError } from '../errors.js';
import { ForbiddenError, UnknownHostError } from '../errors.js';
import { hasSessionCookie } from './auth.js';

/**
 * The header the dashboard sends on its state-changing calls. A page of another origin cannot set it: a
 * custom header needs a CORS preflight, which the node never grants.
 */
export const CSRF_HEADER = 'x-baton-csrf';

/** Probes answer whatever name they are reached by: load balancers and orchestrators probe by IP address. */
const PROBES = new Set(['/healthz', '/readyz']);
const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** Signing in and out needs no CSRF header: the Origin check alone covers them. */
const SESSION_PATH = '/v1/session';

/** Registers the Host and Origin checks; call it before the auth hook, so that a page is refused first. */
export function registerBrowserChecks(app: FastifyInstance, config: HttpConfig): void {
  const accepts = hostRule(config);
  // A refusal is passed to done(): the server's error handler answers it, as for every route.
  app.addHook('onRequest', (request, _reply, done) => {
    const path = request.url.split('?')[0] ?? '';
    const refusal =
      (PROBES.has(path) ? undefined : checkHost(request, accepts)) ??
      (STATE_CHANGING.has(request.method) ? checkOrigin(request, path) : undefined);
    done(refusal);
  });
}

/** Whether a Host name (lowercased, without brackets or port) names this node. */
type HostRule = (name: string) => boolean;

function hostRule(config: HttpConfig): HostRule {
  if (config.hosts === 'any') return () => true;
  const names = new Set([...config.hosts, bareHostName(config.host)]);
  return (name) => isLoopbackHost(name) || names.has(name);
}

function checkHost(request: FastifyRequest, accepts: HostRule): BatonError | undefined {
  const host = request.host;
  const name = host ? hostName(host) : undefined;
  if (name !== undefined && accepts(name)) return undefined;
  return new UnknownHostError(
    host
      ? `Host ${JSON.stringify(host)} does not name this node; add the name to [http] hosts to accept it`
      : 'the request has no Host header',
  );
}

/**
 * A state-changing request must not come from a page of another origin: its Origin (or, lacking one, its
 * Sec-Fetch-Site) must say it is the node's own. One signed in by the dashboard's cookie alone must also
 * prove it came from a page of the node: by an Origin, or by the header a page of another origin cannot set.
 */
function checkOrigin(request: FastifyRequest, path: string): BatonError | undefined {
  const origin = request.headers.origin;
  const own = ownOrigin(request);
  if (origin !== undefined) {
    const claimed = parseOrigin(origin);
    if (claimed === undefined || claimed !== own) {
      return new ForbiddenError(
        `cross-origin request refused: Origin ${origin} is not this node's origin (${own ?? 'unknown'})` +
          proxyHint(claimed, own),
      );
    }
    return undefined;
  }
  const site = request.headers['sec-fetch-site'];
  if (site === 'cross-site' || site === 'same-site') {
    return new ForbiddenError(`cross-origin request refused: Sec-Fetch-Site is ${site}`);
  }
  if (
    path !== SESSION_PATH &&
    request.headers.authorization === undefined &&
    request.headers[CSRF_HEADER] === undefined &&
    hasSessionCookie(request)
  ) {
    return new ForbiddenError(
      `a request signed in by the session cookie alone needs an Origin header or ${CSRF_HEADER}: 1 ` +
        '(the dashboard sends both); other clients send Authorization: Bearer <token>',
    );
  }
  return undefined;
}

/** The origin the request was sent to, e.g. `http://127.0.0.1:8080`; undefined without a usable Host. */
function ownOrigin(request: FastifyRequest): string | undefined {
  return request.host ? parseOrigin(`${request.protocol}://${request.host}`) : undefined;
}

/** `scheme://host[:port]` in the form browsers send (default port left out), or undefined for "null" & co. */
function parseOrigin(text: string): string | undefined {
  try {
    const url = new URL(text);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.origin : undefined;
  } catch {
    return undefined;
  }
}

/** Behind a TLS proxy whose X-Forwarded-Proto is not believed, the page is https and the node sees http. */
function proxyHint(claimed: string | undefined, own: string | undefined): string {
  if (claimed === undefined || own === undefined) return '';
  const page = new URL(claimed);
  const node = new URL(own);
  return page.protocol === 'https:' && node.protocol === 'http:' && page.hostname === node.hostname
    ? '; behind a TLS proxy, set [http] trust_proxy to its address'
    : '';
}

/** The name part of a Host header, lowercased, without port, brackets or a final dot; undefined if malformed. */
function hostName(host: string): string | undefined {
  // Only what a browser can send: a name, an IPv4 address or a bracketed IPv6 one, and a port.
  if (!/^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/.test(host)) return undefined;
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : (host.split(':')[0] ?? '');
  return bareHostName(name);
}
