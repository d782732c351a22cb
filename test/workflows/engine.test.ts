// Workflows on one node in this process, on the embedded store, with tasks given as functions: an
// execution starts its first tasks, `after` makes a fan-in DAG run in order, two overlapping executions
// never cross-fire, `all` and `any` conditions, max_concurrent with queue and skip, a stop request, and a
// failing task that fails its execution.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import type { BatonNode, ConfigInput } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { waitFor } from '../tasks/support.js';

interface Row {
  [key: string]: unknown;
}

let node: BatonNode | undefined;
let dir: string | undefined;

afterEach(async () => {
  await node?.stop();
  node = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function start(workflows: NonNullable<ConfigInput['workflows']>): Promise<BatonNode> {
  dir = await mkdtemp(path.join(os.tmpdir(), 'baton-workflows-'));
  node = await startNode({
    node: { name: 'wf', data_dir: dir, shutdown_timeout_ms: 3000 },
    log: { level: 'silent' },
    http: { enabled: false },
    workflows,
  });
  return node;
}

async function rows(text: string, params: unknown[] = []): Promise<Row[]> {
  return (await (node as BatonNode).admin.sql(text, params)).rows as Row[];
}

async function send(key: string, context?: Record<string, unknown>, namespace = 'default'): Promise<void> {
  await (node as BatonNode).events?.append([
    { namespace, key, sender: 'test', ...(context ? { context: JSON.stringify(context) } : {}) },
  ]);
}

async function executions(workflow: string): Promise<Row[]> {
  return rows(
    `SELECT id, state, trigger_key, error FROM baton_workflow_executions WHERE workflow = $1 ORDER BY trigger_offset`,
    [workflow],
  );
}

async function ended(workflow: string, count: number): Promise<Row[]> {
  return waitFor(
    async () => {
      const all = await executions(workflow);
      const done = all.filter((row) => !['queued', 'running'].includes(String(row['state'])));
      return done.length >= count ? all : undefined;
    },
    60_000,
    `${count} ended executions of ${workflow}`,
  );
}

describe('workflows', () => {
  it('runs a fan-in DAG in order, each task once, and ends succeeded', async () => {
    const order: string[] = [];
    const step = (name: string) => async (): Promise<void> => {
      order.push(`${name}:start`);
      await new Promise((resolve) => setTimeout(resolve, name === 'b' ? 150 : 20));
      order.push(`${name}:end`);
    };
    await start({
      dag: {
        triggers: [{ on: { key: 'go' } }],
        tasks: {
          a: { run: step('a') },
          b: { run: step('b'), after: ['a'] },
          c: { run: step('c'), after: ['a'] },
          d: { run: step('d'), after: ['b', 'c'] },
        },
      },
    });
    await send('go');
    const [execution] = await ended('dag', 1);
    expect(execution?.['state']).toBe('succeeded');
    expect(order.filter((entry) => entry.endsWith(':start')).sort()).toEqual([
      'a:start',
      'b:start',
      'c:start',
      'd:start',
    ]);
    const at = (entry: string): number => order.indexOf(entry);
    expect(at('a:end')).toBeLessThan(at('b:start'));
    expect(at('a:end')).toBeLessThan(at('c:start'));
    expect(at('b:end')).toBeLessThan(at('d:start'));
    expect(at('c:end')).toBeLessThan(at('d:start'));
    const runs = await rows(`SELECT task, state FROM baton_task_runs WHERE execution = $1 ORDER BY task`, [
      execution?.['id'],
    ]);
    expect(runs).toEqual(['a', 'b', 'c', 'd'].map((task) => ({ task, state: 'succeeded' })));
  });

  it('two overlapping executions never cross-fire: each load follows its own extract', async () => {
    const loads: { execution: string | undefined; batch: string | null }[] = [];
    const gates = new Map<string, () => void>();
    await start({
      etl: {
        triggers: [{ on: { key: 'batch.*' } }],
        tasks: {
          extract: {
            run: async (ctx: {
              execution: string | undefined;
              sendEvent: (key: string, value?: string) => Promise<unknown>;
            }) => {
              await new Promise<void>((resolve) => gates.set(String(ctx.execution), resolve));
              await ctx.sendEvent('extracted', String(ctx.execution));
            },
          },
          load: {
            run: (ctx: { execution: string | undefined }) => {
              loads.push({ execution: ctx.execution, batch: null });
            },
          },
        },
        rules: [{ on: { key: 'extracted' }, action: 'start', task: 'load' }],
      },
    } as never);
    await send('batch.1');
    await send('batch.2');
    const ids = await waitFor(
      () => Promise.resolve(gates.size === 2 ? [...gates.keys()] : undefined),
      30_000,
      'two extracts',
    );
    // The second execution's extract finishes first.
    gates.get(ids[1] as string)?.();
    await waitFor(() => Promise.resolve(loads.length >= 1 || undefined), 30_000, 'the first load');
    expect(loads.map((load) => load.execution)).toEqual([ids[1]]);
    gates.get(ids[0] as string)?.();
    const all = await ended('etl', 2);
    expect(all.map((row) => row['state'])).toEqual(['succeeded', 'succeeded']);
    expect(loads.map((load) => load.execution).sort()).toEqual([...ids].sort());
  });

  it('all and any conditions, and a failing task fails its execution', async () => {
    const ran: string[] = [];
    type Ctx = { sendEvent: (key: string) => Promise<unknown> };
    await start({
      cond: {
        tasks: {
          first: {
            run: async (ctx: Ctx) => {
              ran.push('first');
              await ctx.sendEvent('part.one');
              await ctx.sendEvent('other');
              await ctx.sendEvent('part.two');
            },
          },
          both: { run: () => void ran.push('both') },
          either: { run: () => void ran.push('either') },
          broken: { run: async () => Promise.reject(new Error('boom')) },
        },
        rules: [
          { on: { all: [{ key: 'part.one' }, { key: 'part.two' }] }, action: 'start', task: 'both' },
          { on: { any: [{ key: 'nope' }, { key: 'part.*' }] }, action: 'start', task: 'either' },
          { on: { task: 'both', state: 'succeeded' }, action: 'start', task: 'broken' },
        ],
      },
    } as never);
    await send('workflow.cond.start', { startExecution: 'exec-1' });
    const [execution] = await ended('cond', 1);
    expect(execution?.['id']).toBe('exec-1');
    expect(execution?.['state']).toBe('failed');
    expect(execution?.['error']).toBe('task broken failed');
    expect(ran.filter((name) => name === 'both')).toHaveLength(1);
    // `any` fired on part.one and on part.two: two runs, by two events.
    expect(ran.filter((name) => name === 'either')).toHaveLength(2);
  });

  it('ignores events of a run that is not the current run of its task (an ended or lost one)', async () => {
    const ran: string[] = [];
    let release: (() => void) | undefined;
    await start({
      guard: {
        tasks: {
          hold: { run: () => new Promise<void>((resolve) => (release = resolve)) },
          follow: { run: () => void ran.push('follow') },
        },
        rules: [{ on: { key: 'go.on' }, action: 'start', task: 'follow' }],
      },
    } as never);
    await send('workflow.guard.start', { startExecution: 'exec-g' });
    await waitFor(() => Promise.resolve(release !== undefined || undefined), 30_000, 'the hold task');
    // A run id the execution does not know, then no run at all (an operator's nudge): only the second fires.
    await send('go.on', { execution: 'exec-g', taskRun: 'a-lost-run' });
    await send('go.on', { execution: 'exec-g' });
    await waitFor(() => Promise.resolve(ran.length >= 1 || undefined), 30_000, 'the follow task');
    release?.();
    const [execution] = await ended('guard', 1);
    expect(execution?.['state']).toBe('succeeded');
    const runs = await rows(
      `SELECT task, trigger_key FROM baton_task_runs WHERE execution = 'exec-g' ORDER BY task`,
    );
    expect(runs).toEqual([
      { task: 'follow', trigger_key: 'go.on' },
      { task: 'hold', trigger_key: 'workflow.guard.running' },
    ]);
  });

  it('a queue of 200 executions behind max_concurrent = 2: each promoted once, each runs its task once', async () => {
    await start({
      w: {
        max_concurrent: 2,
        triggers: [{ on: { key: 'go' } }],
        tasks: { only: { run: () => undefined } },
      },
    });
    // One append: the executions are created (two running, the rest queued) in one batch of the engine,
    // and several end and promote others within later batches.
    await (node as BatonNode).events?.append(
      Array.from({ length: 200 }, (_, index) => ({ key: 'go', value: String(index), sender: 'test' })),
    );
    const all = await ended('w', 200);
    expect(all.filter((row) => row['state'] !== 'succeeded')).toEqual([]);
    const runs = await rows(`
      SELECT e.id, count(r.id)::int AS runs FROM baton_workflow_executions e
      LEFT JOIN baton_task_runs r ON r.execution = e.id GROUP BY e.id HAVING count(r.id) <> 1`);
    expect(runs).toEqual([]);
    const running = await rows(`
      SELECT context::json->>'execution' AS execution, count(*)::int AS n FROM baton_events
      WHERE key = 'workflow.w.running' GROUP BY 1 HAVING count(*) <> 1`);
    expect(running).toEqual([]);
  });

  it('a late state event of a replaced run does not start the tasks after it again', async () => {
    let upRuns = 0;
    const downs: string[] = [];
    type Ctx = { runId: string; sendEvent: (key: string) => Promise<unknown> };
    await start({
      r: {
        tasks: {
          first: { run: () => undefined },
          up: {
            after: ['first'],
            run: async (ctx: Ctx) => {
              upRuns += 1;
              if (upRuns > 1) return;
              // The first run asks for its own restart, then ends late, ignoring its stop.
              await ctx.sendEvent('again');
              await new Promise((resolve) => setTimeout(resolve, 800));
            },
          },
          down: { after: ['up'], run: (ctx: Ctx) => void downs.push(ctx.runId) },
        },
        rules: [{ on: { key: 'again' }, action: 'restart', task: 'up' }],
      },
    } as never);
    await send('workflow.r.start', { startExecution: 'exec-r' });
    const [execution] = await ended('r', 1);
    expect(execution?.['state']).toBe('succeeded');
    const runs = await rows(
      `SELECT task, state FROM baton_task_runs WHERE execution = 'exec-r' ORDER BY task, created_at`,
    );
    expect(runs).toEqual([
      { task: 'down', state: 'succeeded' },
      { task: 'first', state: 'succeeded' },
      { task: 'up', state: 'stopped' },
      { task: 'up', state: 'succeeded' },
    ]);
    expect(downs).toHaveLength(1);
  });

  it('max_concurrent queues or skips; a stop request ends an execution stopped', async () => {
    await start({
      one: {
        max_concurrent: 1,
        triggers: [{ on: { key: 'one' } }],
        tasks: { wait: { run: async (ctx: { signal: AbortSignal }) => waitAborted(ctx.signal) } },
      },
      skipper: {
        max_concurrent: 1,
        over_limit: 'skip',
        triggers: [{ on: { key: 'skip' } }],
        tasks: { wait: { run: async (ctx: { signal: AbortSignal }) => waitAborted(ctx.signal) } },
      },
    } as never);
    await send('one');
    await send('one');
    await send('skip');
    await send('skip');
    const states = await waitFor(
      async () => {
        const [one, skip] = [await executions('one'), await executions('skipper')];
        return one.length === 2 && skip.length === 1 ? one.map((row) => row['state']) : undefined;
      },
      30_000,
      'a running and a queued execution',
    );
    expect(states).toEqual(['running', 'queued']);
    const [first, second] = await executions('one');
    await rows(`UPDATE baton_workflow_executions SET stop_requested_at = now() WHERE id = $1`, [
      first?.['id'],
    ]);
    await rows(
      `UPDATE baton_task_runs SET stop_requested_at = now() WHERE execution = $1 AND state IN ('pending','running')`,
      [first?.['id']],
    );
    await waitFor(
      async () => {
        const now = await executions('one');
        return now[0]?.['state'] === 'stopped' && now[1]?.['state'] === 'running' ? true : undefined;
      },
      30_000,
      'the first stopped and the queued one running',
    );
    expect((await executions('one'))[1]?.['id']).toBe(second?.['id']);
  });
});

function waitAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
