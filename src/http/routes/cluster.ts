// The group over HTTP: GET /v1/cluster (role, term, primary, members, failovers), POST /v1/cluster/failover
// (asked of any node: the primary yields; a secondary forwards the request to the primary), and the
// primaryOnly guard that refuses primary-only routes on a secondary with where the primary is.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';

import { clusterJson, componentJson } from '../../util/wire.js';
import type { HttpNode } from '../node.js';
import { parseInput } from '../validate.js';

const failoverBody = z.object({ to: z.string().min(1).max(200).optional() }).strict();

export function registerClusterRoutes(app: FastifyInstance, node: HttpNode, token: string | undefined): void {
  app.get('/v1/cluster', async () => clusterJson(await node.cluster()));

  app.get('/v1/components', () => ({ components: node.components().map(componentJson) }));

  app.post('/v1/cluster/failover', async (request, reply) => {
    const body = parseInput(failoverBody, request.body ?? {}, 'body');
    if (node.role === 'not-in-group') {
      return reply
        .code(409)
        .send({ error: 'this node is not in a group: there is nothing to fail over', code: 'NOT_IN_GROUP' });
    }
    const before = { primary: node.leader, term: node.term };
    if (node.role === 'primary') {
      await node.failover(body.to);
      return { ok: true, yielded_by: node.name, previous_term: before.term, to: body.to ?? null };
    }
    // A secondary passes the request on to the primary, which alone can yield.
    const primary = (await node.cluster()).members.find((member) => member.node === node.leader);
    if (!primary?.address) {
      return reply.code(503).send({
        error: 'no primary is known to this node right now; try again',
        code: 'NO_PRIMARY',
        role: node.role,
      });
    }
    const answer = await fetch(`${primary.address}/v1/cluster/failover`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    return reply.code(answer.status).send(await answer.json());
  });
}

/**
 * A fastify preHandler for routes that must run on the primary only: on a secondary it answers 503 with
 * `{error, role, primary}` (the primary's name and address when known). A node not in a group acts alone.
 */
export function primaryOnly(node: HttpNode) {
  return async (_request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (node.role === 'primary' || node.role === 'not-in-group') return;
    const primary = node.leader
      ? (await node.cluster().catch(() => undefined))?.members.find((member) => member.node === node.leader)
      : undefined;
    await reply.code(503).send({
      error: `this node is ${node.role}: only the primary does this`,
      code: 'NOT_PRIMARY',
      role: node.role,
      primary: node.leader ? { node: node.leader, address: primary?.address ?? null } : null,
    });
  };
}
