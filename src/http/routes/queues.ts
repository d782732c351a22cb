// Queue listings and error queues: GET /v1/queues, and list / replay / drop of `errors-<queue>`. Listings
// leave out the queues the token may not use.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import { UnknownErrorRecordError } from '../../errors.js';
import { errorQueueName } from '../../queue/backend.js';
import { countersJson, errorRecordJson, queueJson } from '../../queue/wire.js';
import { allowedQueues, mayUseQueue, needs } from '../auth.js';
import type { HttpNode } from '../node.js';
import { integerText, parseInput, recordIdText } from '../validate.js';

const listQuery = z.object({
  limit: integerText('a limit', 1, 10_000).default(100),
  after: recordIdText.optional(),
  before: recordIdText.optional(),
});
const replayBody = z
  .object({
    ids: z.array(recordIdText).max(10_000).optional(),
    limit: z.number().int().min(1).max(100_000).default(1000),
  })
  .strict();
const dropParams = z.object({ queue: z.string(), id: recordIdText });

export function registerQueueRoutes(app: FastifyInstance, node: HttpNode): void {
  app.get('/v1/queues', needs('read', { filtered: true }), async (request) => ({
    queues: (await node.admin.queues()).filter((queue) => mayUseQueue(request, queue.name)).map(queueJson),
  }));

  // This node's counters alone: what a command sums over the group, without each node counting the queues.
  app.get('/v1/queues/counters', needs('read', { filtered: true }), (request) => {
    const counters = node.queueCounters();
    const queues = allowedQueues(request);
    if (queues === undefined) return countersJson(counters);
    return countersJson(new Map([...counters].filter(([name]) => queues.includes(name))));
  });

  const oneQueue = { queueParam: 'queue' } as const;
  const listErrors = needs('read', oneQueue);
  app.get<{ Params: { queue: string } }>('/v1/queues/:queue/errors', listErrors, async (request) => {
    const query = parseInput(listQuery, request.query, 'query');
    const errors = await node.admin.listErrors(request.params.queue, {
      limit: query.limit,
      ...(query.after ? { afterId: query.after } : {}),
      ...(query.before ? { beforeId: query.before } : {}),
    });
    return {
      queue: request.params.queue,
      error_queue: errorQueueName(request.params.queue),
      errors: errors.map(errorRecordJson),
    };
  });

  const replay = needs('admin', oneQueue);
  app.post<{ Params: { queue: string } }>('/v1/queues/:queue/errors/replay', replay, async (request) => {
    const body = parseInput(replayBody, request.body ?? {}, 'body');
    const replayed = await node.admin.replayErrors(request.params.queue, {
      limit: body.limit,
      ...(body.ids ? { ids: body.ids } : {}),
    });
    return { replayed };
  });

  app.delete('/v1/queues/:queue/errors/:id', needs('admin', oneQueue), async (request) => {
    const { queue, id } = parseInput(dropParams, request.params, 'path');
    const dropped = await node.admin.dropErrors(queue, [id]);
    if (dropped === 0) throw new UnknownErrorRecordError(queue, [id]);
    return { dropped };
  });
}
