// Workflows on a node process (the built CLI, embedded store), with command tasks that append a line when
// they start and end and send their events with their execution in the context, as a client inside a task
// run does:
// 1. three executions of one workflow overlap and finish their `extract` in the reverse order: each `load`
//    is started by the `extracted` event of its own execution;
// 2. a DAG with a fan-in runs in order, each task once, and its executions end `succeeded`;
// 3. `all` and `any` conditions count only their own execution's events.
import { writeFile } from 'node:fs/promises';

import { afterEach, describe, expect, it } from 'vitest';

import type { BatonNodeProcess, TempProject } from '../support/process.js';
import { freePort, sqlOverHttp, startBatonNode, tempProject } from '../support/process.js';
import { sendEventCommand } from '../tasks/support.js';
import type { Query, Row, TaskLine } from './support.js';
import {
  allEnded,
  dump,
  endNodesAndTasks,
  executionRows,
  foreignTriggers,
  literal,
  postEvents,
  runRows,
  taskCommand,
  taskLines,
  waitOr,
} from './support.js';

let project: TempProject | undefined;

afterEach(async () => {
  await endNodesAndTasks(project);
  project = undefined;
});

interface Started {
  readonly node: BatonNodeProcess;
  readonly dir: TempProject;
  readonly out: string;
  readonly query: Query;
  /** Executions and runs of the workflow, and the end of the node's log. */
  readonly diagnose: () => Promise<string>;
}

/** A node whose config is `workflow(out, sendEvent)` (TOML of one workflow named `name`). */
async function start(
  name: string,
  workflow: (out: string, sendEvent: string, project: TempProject) => string,
): Promise<Started> {
  project = await tempProject({ toml: '' });
  const current = project;
  const out = current.path('out.txt');
  const sendEvent = await sendEventCommand(current);
  await current.write(
    'baton.toml',
    `[node]\nname = "n1"\ndata_dir = "data"\nshutdown_timeout_ms = 3000\n[log]\nlevel = "info"\n` +
      `[http]\nport = ${await freePort()}\n` +
      workflow(out, sendEvent, current),
  );
  const node = await startBatonNode(current.configPath);
  const query: Query = (statement) => sqlOverHttp(node.url, statement);
  const diagnose = async (): Promise<string> =>
    `${await dump(query, name)}\n--- node log (end)\n${node.stderr.split('\n').slice(-40).join('\n')}`;
  return { node, dir: current, out, query, diagnose };
}

/** The one line of `phase` of `task` in `execution`. */
function lineOf(all: readonly TaskLine[], phase: 'start' | 'end', task: string, execution: string): TaskLine {
  const found = all.filter(
    (line) => line.phase === phase && line.task === task && line.execution === execution,
  );
  expect(found, `${phase} lines of ${task} in ${execution}`).toHaveLength(1);
  return found[0] as TaskLine;
}

/** How many runs of `task` each execution had, by execution id. */
function runsPerExecution(runs: readonly Row[], task: string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const run of runs) {
    if (run['task'] === task) counts[String(run['execution'])] = (counts[String(run['execution'])] ?? 0) + 1;
  }
  return counts;
}

describe('workflows on a node process', () => {
  it('overlapping executions never cross-fire: each load is started by its own extract', async () => {
    const { dir, out, query, node, diagnose } = await start(
      'etl',
      (output, sendEvent, p) =>
        `[workflows.etl]\nnamespace = "etl"\ntriggers = [{ on = { key = "batch.*" } }]\n` +
        // extract waits until the test gives it its time, sleeps that long, then says it is done.
        `[workflows.etl.tasks.extract]\ncommand = ${taskCommand(
          output,
          'extract',
          `delay=${p.path('delay')}-$BATON_EXECUTION; while [ ! -f $delay ]; do sleep 0.05; done; ` +
            `sleep $(cat $delay); ${sendEvent} extracted $BATON_EXECUTION`,
        )}\n` +
        `[workflows.etl.tasks.load]\ncommand = ${taskCommand(output, 'load', 'true')}\n` +
        `[[workflows.etl.rules]]\non = { key = "extracted" }\naction = "start"\ntask = "load"\n`,
    );
    await postEvents(
      node.url,
      ['1', '2', '3'].map((n) => ({ key: `batch.${n}`, value: n, namespace: 'etl' })),
    );
    // All three extracts run at once before any is given its time.
    const executions = await waitOr(
      async () => {
        const rows = await executionRows(query, 'etl');
        const started = (await taskLines(out)).filter((line) => line.phase === 'start');
        return rows.length === 3 && started.length === 3 ? rows : undefined;
      },
      60_000,
      'three extracts running',
      diagnose,
    );
    const ids = executions.map((row) => String(row['id']));
    expect(executions.map((row) => row['trigger_key'])).toEqual(['batch.1', 'batch.2', 'batch.3']);
    // The first execution sleeps longest: the extracts end in the reverse order.
    const delayMs = (index: number): number => 200 + (ids.length - 1 - index) * 1500;
    for (const [index, id] of ids.entries()) {
      await writeFile(dir.path(`delay-${id}`), String(delayMs(index) / 1000));
    }
    const ended = await allEnded(query, 'etl', 3, 120_000, diagnose);
    expect(ended.map((row) => row['state'])).toEqual(['succeeded', 'succeeded', 'succeeded']);

    const extracted = await query(
      `SELECT "offset"::int AS "offset", value, context FROM baton_events
       WHERE namespace = 'etl' AND key = 'extracted' ORDER BY "offset"`,
    );
    // Each execution's extract sent one `extracted`, the last-started first.
    expect(extracted.map((event) => event['value'])).toEqual([...ids].reverse());
    const offsetOf = new Map(extracted.map((event) => [String(event['value']), Number(event['offset'])]));
    const runs = await runRows(query, 'etl');
    for (const id of ids) {
      const loads = runs.filter((run) => run['execution'] === id && run['task'] === 'load');
      expect(loads, `load runs of ${id}`).toHaveLength(1);
      expect(loads[0]?.['trigger_key']).toBe('extracted');
      expect(loads[0]?.['trigger_offset']).toBe(offsetOf.get(id));
      expect(loads[0]?.['state']).toBe('succeeded');
    }
    expect(await foreignTriggers(query, 'etl')).toEqual([]);

    // What really ran: one extract and one load per execution, each load once its own extract had slept.
    const all = await taskLines(out);
    expect(all).toHaveLength(12);
    const starts = all.filter((line) => line.phase === 'start' && line.task === 'extract');
    const firstEnd = Math.min(...all.filter((line) => line.phase === 'end').map((line) => line.ms));
    expect(Math.max(...starts.map((line) => line.ms))).toBeLessThanOrEqual(firstEnd);
    for (const [index, id] of ids.entries()) {
      const load = lineOf(all, 'start', 'load', id);
      expect(load.run).toBe(runs.find((run) => run['execution'] === id && run['task'] === 'load')?.['id']);
      expect(load.ms).toBeGreaterThanOrEqual(lineOf(all, 'start', 'extract', id).ms + delayMs(index));
    }
    const loadOrder = all.filter((line) => line.phase === 'start' && line.task === 'load');
    expect(loadOrder.map((line) => line.execution)).toEqual([...ids].reverse());
  }, 180_000);

  it('runs a fan-in DAG in order, each task once, and ends succeeded', async () => {
    const { out, query, node, diagnose } = await start('dag', (output) => {
      const task = (name: string, body: string, after: string[]): string =>
        `[workflows.dag.tasks.${name}]\ncommand = ${taskCommand(output, name, body)}\n` +
        `after = ${JSON.stringify(after)}\n`;
      return (
        `[workflows.dag]\nnamespace = "dag"\n` +
        task('a', 'sleep 0.3', []) +
        task('b', 'sleep 1', ['a']) +
        task('c', 'sleep 0.2', ['a']) +
        task('d', 'true', ['b', 'c'])
      );
    });
    const ids = ['dag-1', 'dag-2'];
    await postEvents(
      node.url,
      ids.map((id) => ({ key: 'workflow.dag.start', namespace: 'dag', context: { startExecution: id } })),
    );
    const ended = await allEnded(query, 'dag', 2, 120_000, diagnose);
    expect(ended.map((row) => [row['id'], row['state']])).toEqual(ids.map((id) => [id, 'succeeded']));

    const runs = await runRows(query, 'dag');
    const all = await taskLines(out);
    expect(all).toHaveLength(16);
    for (const id of ids) {
      const mine = runs.filter((run) => run['execution'] === id);
      expect(mine.map((run) => [run['task'], run['state'], run['attempt']]).sort()).toEqual(
        ['a', 'b', 'c', 'd'].map((task) => [task, 'succeeded', 1]),
      );
      // d waits for the slower of its two: b's success started it.
      expect(mine.find((run) => run['task'] === 'd')?.['trigger_key']).toBe('task.b.succeeded');
      const at = (phase: 'start' | 'end', task: string): number => lineOf(all, phase, task, id).ms;
      expect(at('end', 'a')).toBeLessThanOrEqual(at('start', 'b'));
      expect(at('end', 'a')).toBeLessThanOrEqual(at('start', 'c'));
      expect(at('end', 'b')).toBeLessThanOrEqual(at('start', 'd'));
      expect(at('end', 'c')).toBeLessThanOrEqual(at('start', 'd'));
      // The lines are those of the runs the store has.
      for (const line of all.filter((entry) => entry.execution === id)) {
        expect(mine.find((run) => run['task'] === line.task)?.['id']).toBe(line.run);
      }
    }
    expect(await foreignTriggers(query, 'dag')).toEqual([]);
  }, 180_000);

  it('all and any conditions count the events of their own execution only', async () => {
    const { dir, out, query, node, diagnose } = await start('cond', (output, sendEvent, p) => {
      const task = (name: string, body = 'true'): string =>
        `[workflows.cond.tasks.${name}]\ncommand = ${taskCommand(output, name, body)}\n`;
      const rule = (on: string, name: string): string =>
        `[[workflows.cond.rules]]\non = ${on}\naction = "start"\ntask = "${name}"\n`;
      return (
        `[workflows.cond]\nnamespace = "cond"\n` +
        // first sends the keys listed in its execution's parts file, in order.
        task('first', `for key in $(cat ${p.path('parts')}-$BATON_EXECUTION); do ${sendEvent} $key; done`) +
        task('both') +
        task('either') +
        task('late') +
        task('after_both') +
        rule(`{ all = [{ key = "part.one" }, { key = "part.two" }] }`, 'both') +
        rule(`{ any = [{ key = "nope" }, { key = "part.*" }] }`, 'either') +
        rule(`{ all = [{ task = "first", state = "succeeded" }, { key = "part.two" }] }`, 'late') +
        rule(`{ any = [{ task = "both", state = "succeeded" }, { key = "never" }] }`, 'after_both')
      );
    });
    const parts: Record<string, string> = {
      full: 'part.one other part.two',
      one: 'part.one',
      two: 'part.two',
    };
    for (const [id, keys] of Object.entries(parts)) await writeFile(dir.path(`parts-${id}`), keys);
    await postEvents(
      node.url,
      Object.keys(parts).map((id) => ({
        key: 'workflow.cond.start',
        namespace: 'cond',
        context: { startExecution: id },
      })),
    );
    const ended = await allEnded(query, 'cond', 3, 120_000, diagnose);
    expect(ended.map((row) => [row['id'], row['state']]).sort()).toEqual(
      Object.keys(parts)
        .map((id) => [id, 'succeeded'])
        .sort(),
    );
    const runs = await runRows(query, 'cond');
    expect(runs.filter((run) => run['state'] !== 'succeeded')).toEqual([]);
    // `all` fires once both parts came in the same execution; `any` once per matching event.
    expect(runsPerExecution(runs, 'first')).toEqual({ full: 1, one: 1, two: 1 });
    expect(runsPerExecution(runs, 'both')).toEqual({ full: 1 });
    expect(runsPerExecution(runs, 'either')).toEqual({ full: 2, one: 1, two: 1 });
    expect(runsPerExecution(runs, 'late')).toEqual({ full: 1, two: 1 });
    expect(runsPerExecution(runs, 'after_both')).toEqual({ full: 1 });
    expect(runs.find((run) => run['task'] === 'late')?.['trigger_key']).toBe('task.first.succeeded');
    expect(await foreignTriggers(query, 'cond')).toEqual([]);
    // The same runs really ran, each once.
    const starts = (await taskLines(out)).filter((line) => line.phase === 'start');
    expect(starts.map((line) => line.run).sort()).toEqual(runs.map((run) => String(run['id'])).sort());
    const sent = await query(
      `SELECT count(*)::int AS n FROM baton_events WHERE namespace = 'cond' AND key = ${literal('part.two')}`,
    );
    expect(sent[0]?.['n']).toBe(2);
  }, 180_000);
});
