// GET /metrics: the node's metrics in the Prometheus text format (behind the token when one is set).
import type { FastifyInstance } from 'fastify';

import type { HttpNode } from '../node.js';

export function registerMetricsRoute(app: FastifyInstance, node: HttpNode): void {
  app.get('/metrics', async (_request, reply) => {
    const { contentType, body } = await node.renderMetrics();
    return reply.type(contentType).send(body);
  });
}
