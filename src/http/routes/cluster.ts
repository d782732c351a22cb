// The group over HTTP: GET /v1/cluster (role, term, primary, members, failovers), GET /v1/components, and
// POST /v1/cluster/failover (asked of any node: the primary yields; a secondary passes the request on to
// the primary), and the primaryOnly guard that refuses primary-only routes on a secondary.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';

import { clusterJson } from '../../cluster/wire.js';
import { componentJson } from '../../components/wire.js';
import { NotPrimaryError } from '../../errors.js';
import { needs } from '../auth.js';
import type { HttpNode } from '../node.js';
import { parseInput } from '../validate.js';

const failoverBody = z.object({ to: z.string().min(1).max(200).optional() }).strict();

export function registerClusterRoutes(app: FastifyInstance, node: HttpNode): void {
  app.get('/v1/cluster', needs('read'), async () => clusterJson(await node.admin.cluster()));

  app.get('/v1/components', needs('read'), () => ({ components: node.components().map(componentJson) }));

  app.post('/v1/cluster/failover', needs('admin'), async (request) => {
    const body = parseInput(failoverBody, request.body ?? {}, 'body');
    const result = await node.admin.failover(body.to);
    return {
      moved: result.moved,
      primary: result.primary ?? null,
      to: result.to ?? null,
      message: result.message,
    };
  });
}

/**
 * A fastify preHandler for routes that must run on the primary only: on a secondary it answers 503
 * (NOT_PRIMARY, with Retry-After) naming the primary and its address when known. A node not in a group
 * acts alone.
 */
export function primaryOnly(node: HttpNode) {
  return async (_request: FastifyRequest): Promise<void> => {
    if (node.role === 'primary' || node.role === 'not-in-group') return;
    const primary = node.leader
      ? (await node.admin.cluster().catch(() => undefined))?.members.find(
          (member) => member.node === node.leader,
        )
      : undefined;
    throw new NotPrimaryError(node.role, node.leader, primary?.address);
  };
}
