// Bearer-token check for every route but the health probes, and the loopback rule of the `sql` endpoint.
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';

import type { FastifyInstance, FastifyRequest } from 'fastify';

import type { HttpConfig } from '../config/types.js';

const OPEN_ROUTES = new Set(['/healthz', '/readyz']);

export function registerAuth(app: FastifyInstance, config: HttpConfig): void {
  const digests = configuredTokens(config).map(digest);
  if (digests.length === 0) return;
  app.addHook('onRequest', async (request, reply) => {
    if (OPEN_ROUTES.has(request.url.split('?')[0] ?? '')) return;
    const presented = bearerToken(request);
    if (presented === undefined) {
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer')
        .send({ error: 'missing bearer token (Authorization: Bearer <token>)', code: 'UNAUTHORIZED' });
    }
    const candidate = digest(presented);
    if (!digests.some((known) => timingSafeEqual(known, candidate))) {
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer')
        .send({ error: 'invalid token', code: 'UNAUTHORIZED' });
    }
  });
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
  return [...(config.token ? [config.token] : []), ...config.tokens.map((entry) => entry.token)];
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
