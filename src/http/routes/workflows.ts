// Workflows over HTTP: GET /v1/workflows (the workflows with their open executions, and the latest
// executions), GET /v1/workflows/executions/:id (one with its runs and DAG), POST /v1/workflows/:name/start
// and POST /v1/workflows/executions/:id/stop. Read and write scopes; a namespace-limited token sees and acts
// on the workflows and executions of its namespaces only, the others answer 404. Any node answers:
// executions live in the shared store, and a start or a stop is recorded there (as an event, as a request)
// for the primary's rule engine.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import { UnknownWorkflowError } from '../../errors.js';
import { EXECUTION_STATES } from '../../tasks/execution-states.js';
import { visibleWorkflows } from '../../tasks/workflow-status.js';
import {
  executionDetailJson,
  executionJson,
  startedJson,
  workflowListingJson,
} from '../../tasks/workflow-wire.js';
import { allowedNamespaces, needs } from '../auth.js';
import type { HttpNode } from '../node.js';
import { integerText, parseInput } from '../validate.js';

const listQuery = z.object({
  limit: integerText('a limit', 1, 10_000).default(100),
  state: z.enum(EXECUTION_STATES).optional(),
  workflow: z.string().min(1).max(128).optional(),
});

const startBody = z
  .object({ id: z.string().min(1).max(128).optional() })
  .strict()
  .optional();

export function registerWorkflowRoutes(app: FastifyInstance, node: HttpNode): void {
  app.get('/v1/workflows', needs('read', { filtered: true }), async (request) => {
    const query = parseInput(listQuery, request.query, 'query');
    const namespaces = allowedNamespaces(request);
    const listing = await node.admin.workflows({
      limit: query.limit,
      ...(query.state ? { state: query.state } : {}),
      ...(query.workflow ? { workflow: query.workflow } : {}),
      ...(namespaces ? { namespaces } : {}),
    });
    return workflowListingJson(listing);
  });

  const read = needs('read', { namespaces: 'checked' });
  app.get<{ Params: { id: string } }>('/v1/workflows/executions/:id', read, async (request) => {
    const namespaces = allowedNamespaces(request);
    return executionDetailJson(await node.admin.execution(request.params.id, { namespaces }));
  });

  const write = needs('write', { namespaces: 'checked' });
  app.post<{ Params: { name: string } }>('/v1/workflows/:name/start', write, async (request, reply) => {
    const { name } = request.params;
    const body = parseInput(startBody, request.body ?? undefined, 'body');
    // A workflow of another namespace is not configured, for a namespace-limited token.
    const visible = visibleWorkflows(node.workflows, allowedNamespaces(request));
    if (!visible.some((workflow) => workflow.name === name)) {
      throw new UnknownWorkflowError(
        name,
        visible.map((workflow) => workflow.name),
      );
    }
    const started = await node.admin.startWorkflow(name, { id: body?.id });
    return reply.code(202).send(startedJson(started));
  });

  app.post<{ Params: { id: string } }>('/v1/workflows/executions/:id/stop', write, async (request) => {
    const namespaces = allowedNamespaces(request);
    // Only an execution the token may see may be stopped; the others do not exist.
    if (namespaces) await node.admin.execution(request.params.id, { namespaces });
    const { execution, requested } = await node.admin.stopExecution(request.params.id);
    return { execution: executionJson(execution), requested };
  });
}
