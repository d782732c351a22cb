// Queue listings and error queues: GET /v1/queues, and list / replay / drop of `errors-<queue>`.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import { errorQueueName } from '../../queue/backend.js';
import { errorJson, queueJson } from '../../util/wire.js';
import type { HttpNode } from '../node.js';
import { parseInput } from '../validate.js';

const listQuery = z.object({
  limit: z.coerce.number().int().min(1).max(10_000).default(100),
  after: z.string().regex(/^\d+$/).optional(),
});
const replayBody = z
  .object({
    ids: z.array(z.string().regex(/^\d+$/)).max(10_000).optional(),
    limit: z.number().int().min(1).max(100_000).default(1000),
  })
  .strict();

export function registerQueueRoutes(app: FastifyInstance, node: HttpNode): void {
  app.get('/v1/queues', async () => ({ queues: (await node.queues()).map(queueJson) }));

  app.get<{ Params: { queue: string } }>('/v1/queues/:queue/errors', async (request) => {
    const query = parseInput(listQuery, request.query, 'query');
    const errors = await node.listErrors(request.params.queue, {
      limit: query.limit,
      ...(query.after ? { afterId: query.after } : {}),
    });
    return {
      queue: request.params.queue,
      error_queue: errorQueueName(request.params.queue),
      errors: errors.map(errorJson),
    };
  });

  app.post<{ Params: { queue: string } }>('/v1/queues/:queue/errors/replay', async (request) => {
    const body = parseInput(replayBody, request.body ?? {}, 'body');
    const replayed = await node.replayErrors(request.params.queue, {
      limit: body.limit,
      ...(body.ids ? { ids: body.ids } : {}),
    });
    return { replayed };
  });

  app.delete<{ Params: { queue: string; id: string } }>(
    '/v1/queues/:queue/errors/:id',
    async (request, reply) => {
      if (!/^\d+$/.test(request.params.id)) {
        return reply.code(400).send({ error: 'error record ids are numbers', code: 'BAD_REQUEST' });
      }
      const dropped = await node.dropErrors(request.params.queue, [request.params.id]);
      if (dropped === 0)
        return reply.code(404).send({ error: `no error record ${request.params.id}`, code: 'NOT_FOUND' });
      return { dropped };
    },
  );
}
