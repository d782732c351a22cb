// Queue listings and error queues: GET /v1/queues, and list / replay / drop of `errors-<queue>`.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import type { ErrorRecord } from '../../queue/backend.js';
import { errorQueueName } from '../../queue/backend.js';
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
  app.get('/v1/queues', async () => ({
    queues: (await node.queues()).map((queue) => ({
      name: queue.name,
      backend: queue.backend,
      depth: queue.depth,
      in_flight: queue.inFlight,
      processed: queue.processed ?? null,
      failed: queue.failed ?? null,
      errors: queue.errors,
      error_queue: errorQueueName(queue.name),
    })),
  }));

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

/** An error record as JSON: the payload as base64, and as text too when it is valid UTF-8. */
export function errorJson(record: ErrorRecord): Record<string, unknown> {
  return {
    id: record.id,
    attempts: record.attempts,
    error: record.error,
    failed_at: record.failedAt.toISOString(),
    enqueued_at: record.enqueuedAt.toISOString(),
    payload_base64: record.payload.toString('base64'),
    payload_text: utf8OrNull(record.payload),
  };
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function utf8OrNull(bytes: Buffer): string | null {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return null;
  }
}
