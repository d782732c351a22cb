// Task runs over HTTP: GET /v1/tasks (newest first; limit, state and task filters) and
// POST /v1/tasks/runs/:id/stop (read and write scopes, runs of the token's namespaces only). Any node answers: runs live in the shared store, and a stop request is
// recorded there for the primary's rule engine to carry out.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import { UnknownTaskRunError } from '../../errors.js';
import { TASK_RUN_STATES } from '../../tasks/runs.js';
import { taskRunJson } from '../../tasks/wire.js';
import { allowedNamespaces, needs } from '../auth.js';
import type { HttpNode } from '../node.js';
import { integerText, parseInput } from '../validate.js';

const listQuery = z.object({
  limit: integerText('a limit', 1, 10_000).default(100),
  state: z.enum(TASK_RUN_STATES).optional(),
  task: z.string().min(1).max(128).optional(),
});

export function registerTaskRoutes(app: FastifyInstance, node: HttpNode): void {
  app.get('/v1/tasks', needs('read', { filtered: true }), async (request) => {
    const query = parseInput(listQuery, request.query, 'query');
    const namespaces = allowedNamespaces(request);
    const runs = await node.admin.taskRuns({
      limit: query.limit,
      ...(query.state ? { state: query.state } : {}),
      ...(query.task ? { task: query.task } : {}),
      ...(namespaces ? { namespaces } : {}),
    });
    return { runs: runs.map(taskRunJson) };
  });

  const stop = needs('write', { namespaces: 'checked' });
  app.post<{ Params: { id: string } }>('/v1/tasks/runs/:id/stop', stop, async (request) => {
    // A namespace-limited token sees (and stops) only runs of tasks in its namespaces; others do not exist.
    const namespaces = allowedNamespaces(request);
    if (namespaces) {
      const [visible] = await node.admin.taskRuns({ id: request.params.id, namespaces, limit: 1 });
      if (!visible) throw new UnknownTaskRunError(request.params.id);
    }
    const { run, requested } = await node.admin.stopTaskRun(request.params.id);
    return { run: taskRunJson(run), requested };
  });
}
