// GET /metrics: the node's metrics in the Prometheus text format, for tokens with the metrics scope.
import type { FastifyInstance } from 'fastify';

import { needs } from '../auth.js';
import type { HttpNode } from '../node.js';

export function registerMetricsRoute(app: FastifyInstance, node: HttpNode): void {
  app.get('/metrics', needs('metrics'), async (_request, reply) => {
    const { contentType, body } = await node.renderMetrics();
    return reply.type(contentType).send(body);
  });
}
