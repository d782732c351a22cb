// Workflows over HTTP, on a node in this process (embedded store, command tasks): GET /v1/workflows in the
// wire format, POST /v1/workflows/:name/start making an execution that succeeds, GET
// /v1/workflows/executions/:id with its runs oldest first and its DAG, POST .../stop ending one stopped, the
// scopes and namespaces of every route (a limited token sees and acts on its namespaces only, 404 for the
// rest), the baton_workflow_executions gauge, and HttpAdmin reading all of it back through its schemas.
import { describe, expect, it } from 'vitest';

import { HttpAdmin } from '../../src/admin/http-admin.js';
import { UnknownExecutionError, UnknownWorkflowError } from '../../src/errors.js';
import { waitFor } from '../tasks/support.js';
import { ADMIN, READER, SCRAPER, TEAM, call, useWorkflowsNode } from './surfaces-support.js';

interface ExecutionWire {
  id: string;
  workflow: string;
  namespace: string;
  state: string;
  trigger_offset: number;
  trigger_key: string;
  error: string | null;
  stop_requested: boolean;
  ended_at: string | null;
  tasks: Record<string, string>;
}

interface Detail {
  execution: ExecutionWire;
  runs: Array<{ id: string; task: string; state: string; execution: string; workflow: string }>;
  dag: { tasks: Array<{ name: string; after: string[]; started_by: string[]; state: string | null }> };
}

interface Listing {
  workflows: Array<{ name: string; namespace: string; queued: number; running: number }>;
  executions: ExecutionWire[];
}

const node = useWorkflowsNode();

const request = (token: string, method: string, path: string, body?: unknown) =>
  call(node().url, token, method, path, body);

async function json<T>(token: string, method: string, path: string, body?: unknown): Promise<T> {
  const response = await request(token, method, path, body);
  expect(response.status, `${method} ${path}`).toBeLessThan(300);
  return (await response.json()) as T;
}

/** The execution once it exists and is in one of `states`. */
function reached(id: string, states: readonly string[]): Promise<Detail> {
  return waitFor(
    async () => {
      const response = await request(ADMIN, 'GET', `/v1/workflows/executions/${id}`);
      if (response.status === 404) return undefined;
      const detail = (await response.json()) as Detail;
      return states.includes(detail.execution.state) ? detail : undefined;
    },
    60_000,
    `execution ${id} in ${states.join('|')}`,
  );
}

async function gauge(workflow: string, state: string): Promise<number | undefined> {
  const text = await (await request(SCRAPER, 'GET', '/metrics')).text();
  const line = text
    .split('\n')
    .find((entry) => entry.startsWith(`baton_workflow_executions{workflow="${workflow}",state="${state}"`));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

/** baton_workflow_executions_ended_total of a workflow and state. */
async function ended(workflow: string, state: string): Promise<number | undefined> {
  const text = await (await request(SCRAPER, 'GET', '/metrics')).text();
  const prefix = `baton_workflow_executions_ended_total{workflow="${workflow}",state="${state}",`;
  const line = text.split('\n').find((entry) => entry.startsWith(prefix));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

describe('workflows over HTTP', () => {
  it('lists the workflows in the wire format, and a limited token those of its namespaces', async () => {
    const listing = await json<Listing>(ADMIN, 'GET', '/v1/workflows');
    expect(listing.workflows.map((workflow) => workflow.name)).toEqual(['etl', 'slow', 'broken']);
    expect(listing.workflows[0]).toEqual({
      name: 'etl',
      namespace: 'etl',
      max_concurrent: 0,
      over_limit: 'queue',
      triggers: [{ namespace: 'etl', key: 'batch.*', value: null }],
      tasks: [
        { name: 'report', kind: 'command', after: [], on_lost: 'mark' },
        { name: 'load', kind: 'command', after: ['extract'], on_lost: 'restart' },
        { name: 'extract', kind: 'command', after: [], on_lost: 'mark' },
      ],
      rules: [
        {
          index: 0,
          source: 'rules[0]',
          action: 'start',
          task: 'report',
          on: { task: 'load', state: 'succeeded' },
        },
        {
          index: 1,
          source: 'rules[1]',
          action: 'stop',
          task: 'report',
          on: { all: [{ key: 'halt.*' }, { key: 'really', value: 'yes' }] },
        },
        {
          index: 2,
          source: 'tasks.load.after',
          action: 'start',
          task: 'load',
          on: { task: 'extract', state: 'succeeded' },
        },
      ],
      queued: 0,
      running: 0,
    });
    expect(listing.workflows[1]).toMatchObject({ name: 'slow', max_concurrent: 1, over_limit: 'skip' });
    expect(listing.executions).toEqual([]);

    const team = await json<Listing>(TEAM, 'GET', '/v1/workflows');
    expect(team.workflows.map((workflow) => workflow.name)).toEqual(['etl', 'broken']);
    expect((await request(SCRAPER, 'GET', '/v1/workflows')).status).toBe(403);
    const bad = await request(ADMIN, 'GET', '/v1/workflows?state=sleeping');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toMatch(/query\.state/);
  });

  it('starts an execution that succeeds; its detail has the runs oldest first and the DAG in order', async () => {
    expect((await request(READER, 'POST', '/v1/workflows/etl/start')).status).toBe(403);
    const response = await request(ADMIN, 'POST', '/v1/workflows/etl/start', { id: 'etl-1' });
    expect(response.status).toBe(202);
    const started = (await response.json()) as { workflow: string; execution: string; offset: number };
    expect(started).toEqual({ workflow: 'etl', execution: 'etl-1', offset: expect.any(Number) as number });

    const detail = await reached('etl-1', ['succeeded', 'failed', 'stopped', 'lost']);
    expect(detail.execution).toMatchObject({
      id: 'etl-1',
      workflow: 'etl',
      namespace: 'etl',
      state: 'succeeded',
      trigger_offset: started.offset,
      trigger_key: 'workflow.etl.start',
      error: null,
      stop_requested: false,
      tasks: { extract: 'succeeded', load: 'succeeded', report: 'succeeded' },
    });
    expect(detail.execution.ended_at).not.toBeNull();
    expect(detail.runs.map((run) => [run.task, run.state, run.workflow, run.execution])).toEqual(
      ['extract', 'load', 'report'].map((task) => [task, 'succeeded', 'etl', 'etl-1']),
    );
    expect(detail.dag.tasks).toEqual([
      { name: 'extract', after: [], started_by: [], state: 'succeeded' },
      { name: 'load', after: ['extract'], started_by: ['tasks.load.after'], state: 'succeeded' },
      { name: 'report', after: [], started_by: ['rules[0]'], state: 'succeeded' },
    ]);
    const listing = await json<Listing>(ADMIN, 'GET', '/v1/workflows?workflow=etl&state=succeeded');
    expect(listing.workflows.map((workflow) => workflow.name)).toEqual(['etl']);
    expect(listing.executions.map((execution) => execution.id)).toEqual(['etl-1']);

    // Without a body, the execution gets a uuid.
    const bare = await fetch(`${node().url}/v1/workflows/etl/start`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
    });
    expect(bare.status).toBe(202);
    const { execution } = (await bare.json()) as { execution: string };
    expect(execution).toMatch(/^[0-9a-f-]{36}$/);
    expect((await reached(execution, ['succeeded'])).execution.trigger_key).toBe('workflow.etl.start');
  });

  it('refuses an unknown workflow, a taken or malformed id, and answers 404 for an unknown execution', async () => {
    const unknown = await request(ADMIN, 'POST', '/v1/workflows/nope/start');
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({
      code: 'UNKNOWN_WORKFLOW',
      workflow: 'nope',
      workflows: ['etl', 'slow', 'broken'],
    });
    const taken = await request(ADMIN, 'POST', '/v1/workflows/etl/start', { id: 'etl-1' });
    expect(taken.status).toBe(400);
    expect(((await taken.json()) as { error: string }).error).toContain('"etl-1" exists already');
    for (const body of [{ id: 'has space' }, { id: '' }, { id: 'x'.repeat(129) }, { other: 1 }, { id: 7 }]) {
      const refused = await request(ADMIN, 'POST', '/v1/workflows/etl/start', body);
      expect(refused.status, JSON.stringify(body)).toBe(400);
    }
    for (const path of ['/v1/workflows/executions/nope', '/v1/workflows/executions/nope/stop']) {
      const response = await request(ADMIN, path.endsWith('stop') ? 'POST' : 'GET', path);
      expect(response.status, path).toBe(404);
      expect(((await response.json()) as { code: string }).code).toBe('UNKNOWN_EXECUTION');
    }
  });

  it('stops an execution; a limited token sees and stops only those of its namespaces', async () => {
    await json(ADMIN, 'POST', '/v1/workflows/slow/start', { id: 'slow-1' });
    await waitFor(
      async () => (await reached('slow-1', ['running'])).execution.tasks['wait'] === 'running' || undefined,
      60_000,
      'the task of slow-1 to run',
    );
    expect(await gauge('slow', 'running')).toBe(1);
    expect(await gauge('slow', 'queued')).toBe(0);
    expect(await gauge('etl', 'running')).toBe(0);

    // Team etl: the execution and the workflow of namespace ops do not exist; its own do.
    expect((await request(TEAM, 'GET', '/v1/workflows/executions/slow-1')).status).toBe(404);
    expect((await request(TEAM, 'POST', '/v1/workflows/executions/slow-1/stop')).status).toBe(404);
    const hidden = await request(TEAM, 'POST', '/v1/workflows/slow/start');
    expect(hidden.status).toBe(404);
    expect(await hidden.json()).toMatchObject({ code: 'UNKNOWN_WORKFLOW', workflows: ['etl', 'broken'] });
    const seen = await json<Listing>(TEAM, 'GET', '/v1/workflows');
    expect(seen.executions.map((execution) => execution.namespace)).not.toContain('ops');
    expect((await request(TEAM, 'GET', '/v1/workflows/executions/etl-1')).status).toBe(200);
    expect((await request(TEAM, 'POST', '/v1/workflows/executions/etl-1/stop')).status).toBe(200);
    expect((await request(READER, 'POST', '/v1/workflows/executions/slow-1/stop')).status).toBe(403);
    expect((await reached('slow-1', ['running'])).execution.stop_requested).toBe(false);

    const stop = await json<{ execution: ExecutionWire; requested: boolean }>(
      ADMIN,
      'POST',
      '/v1/workflows/executions/slow-1/stop',
    );
    expect(stop.requested).toBe(true);
    expect(stop.execution).toMatchObject({ id: 'slow-1', stop_requested: true });
    const stopped = await reached('slow-1', ['stopped', 'failed', 'succeeded', 'lost']);
    expect(stopped.execution.state).toBe('stopped');
    expect(stopped.runs.map((run) => run.state)).toEqual(['stopped']);
    const again = await json<{ execution: ExecutionWire; requested: boolean }>(
      ADMIN,
      'POST',
      '/v1/workflows/executions/slow-1/stop',
    );
    expect(again).toMatchObject({ requested: false, execution: { state: 'stopped' } });
    expect(await gauge('slow', 'running')).toBe(0);
    expect(await ended('slow', 'stopped')).toBe(1);
  });

  it('HttpAdmin reads the same back through its schemas, with typed errors', async () => {
    const admin = new HttpAdmin(node().url, { token: ADMIN });
    const listing = await admin.workflows({ workflow: 'etl' });
    const etl = node().node.workflows['etl'];
    expect(listing.workflows[0]).toMatchObject({ name: 'etl', rules: etl?.rules, triggers: etl?.triggers });
    expect(listing.workflows[0]?.tasks.map((task) => task.after)).toEqual([[], ['extract'], []]);
    expect(listing.executions.every((execution) => execution.workflow === 'etl')).toBe(true);

    const detail = await admin.execution('etl-1');
    expect(detail.execution.createdAt).toBeInstanceOf(Date);
    expect(detail.execution.view.tasks).toEqual({
      extract: 'succeeded',
      load: 'succeeded',
      report: 'succeeded',
    });
    expect(detail.dag.map((task) => [task.name, task.startedBy, task.state])).toEqual([
      ['extract', [], 'succeeded'],
      ['load', ['tasks.load.after'], 'succeeded'],
      ['report', ['rules[0]'], 'succeeded'],
    ]);
    expect(detail.runs.map((run) => run.task)).toEqual(['extract', 'load', 'report']);

    const started = await admin.startWorkflow('broken', { id: 'broken-1' });
    expect(started).toMatchObject({ workflow: 'broken', execution: 'broken-1' });
    const failed = await waitFor(
      async () => {
        const execution = await admin.execution('broken-1').then(
          (found) => found.execution,
          () => undefined,
        );
        return execution?.endedAt ? execution : undefined;
      },
      60_000,
      'broken-1 to end',
    );
    expect(failed).toMatchObject({ state: 'failed', error: 'task fail failed' });
    expect(await admin.stopExecution('broken-1')).toMatchObject({ requested: false });
    await expect(admin.execution('nope')).rejects.toBeInstanceOf(UnknownExecutionError);
    await expect(admin.stopExecution('nope')).rejects.toBeInstanceOf(UnknownExecutionError);
    await expect(admin.startWorkflow('nope')).rejects.toBeInstanceOf(UnknownWorkflowError);
  });
});
