// Workflows across a kill -9 of the primary, with three node processes on PostgreSQL (postgres elector).
// Ten executions of a chain fetch → transform → store are asked for at once; each task sleeps 1 to 3 s (by
// the execution's number, so that the executions are at different steps); fetch and store have
// on_lost = "restart", transform on_lost = "mark". The primary is killed while runs of both kinds run. The
// new primary marks them lost; it restarts fetch and store in their execution (attempt 2), which then
// succeeds, and ends the executions whose transform was lost `lost`. No event starts a task of an execution
// twice, and no event starts two executions.
//
// A command outlives its node killed with -9: a lost run's process may still end and write its line. So the
// test counts runs in the store, and file lines only where they are unambiguous (a run writes at most one
// start and one end line, with its id; a succeeded run wrote both).
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';

import { agreedPrimary } from '../support/group.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { BatonNodeProcess, TempProject } from '../support/process.js';
import { freePort, startBatonNode, tempProject } from '../support/process.js';
import type { Query, Row } from './support.js';
import {
  allEnded,
  dump,
  endNodesAndTasks,
  foreignTriggers,
  postEvents,
  runRows,
  taskCommand,
  taskLines,
  waitOr,
} from './support.js';

const EXECUTIONS = 10;
const TASKS = ['fetch', 'transform', 'store'] as const;
const RESTARTED = new Set(['fetch', 'store']);

let database: TestDatabase | undefined;
let pool: pg.Pool | undefined;
let shared: TempProject | undefined;

afterEach(async () => {
  await endNodesAndTasks(shared);
  shared = undefined;
  await pool?.end();
  pool = undefined;
  await database?.drop();
  database = undefined;
});

/** The group's nodes, all with the workflow `chain`. */
async function group(project: TempProject, size: number): Promise<BatonNodeProcess[]> {
  database = await createTestDatabase();
  const out = project.path('out.txt');
  // job-<n> sleeps 1 + (n + k) % 3 seconds in its k-th task: the executions are at different steps.
  const task = (name: string, k: number, onLost: string, after: string[]): string =>
    `[workflows.chain.tasks.${name}]\ncommand = ${taskCommand(
      out,
      name,
      `sleep $(( 1 + (\${BATON_EXECUTION##*-} + ${k}) % 3 ))`,
    )}\non_lost = "${onLost}"\nafter = ${JSON.stringify(after)}\n`;
  const workflow =
    `[workflows.chain]\nnamespace = "wf"\n` +
    task('fetch', 0, 'restart', []) +
    task('transform', 1, 'mark', ['fetch']) +
    task('store', 2, 'restart', ['transform']);
  const configs: string[] = [];
  for (let index = 0; index < size; index++) {
    const node = await tempProject({
      toml:
        `[node]\nname = "n${index + 1}"\ndata_dir = "data"\nshutdown_timeout_ms = 3000\n[log]\nlevel = "info"\n` +
        `[http]\nport = ${await freePort()}\n[store]\nurl = "${database.url}"\npool_size = 4\n` +
        `[group]\nname = "g"\nelector = "postgres"\nlease_ms = 2000\nrenew_deadline_ms = 1200\nheartbeat_ms = 200\n` +
        workflow,
    });
    configs.push(node.configPath);
  }
  return Promise.all(configs.map((config) => startBatonNode(config)));
}

function openQuery(url: string): Query {
  const current = new pg.Pool({ connectionString: url, max: 2, options: '-c search_path=baton' });
  current.on('error', () => undefined);
  pool = current;
  return async (statement) => (await current.query(statement)).rows as Row[];
}

function nodeName(nodes: readonly BatonNodeProcess[], node: BatonNodeProcess): string {
  return `n${nodes.indexOf(node) + 1}`;
}

describe('workflows across a kill -9 of the primary (node processes, PostgreSQL)', () => {
  it('ends every execution succeeded, or lost where a task with on_lost = "mark" was lost', async () => {
    shared = await tempProject({ toml: '' });
    const out = shared.path('out.txt');
    const nodes = await group(shared, 3);
    const query = openQuery(database?.url ?? '');
    const { primary: first, term } = await agreedPrimary(nodes, 60_000);
    const survivors = nodes.filter((node) => node !== first);
    const logs = (): string =>
      nodes
        .map(
          (node) =>
            `--- log of ${nodeName(nodes, node)} (end)\n${node.stderr.split('\n').slice(-30).join('\n')}`,
        )
        .join('\n');
    const diagnose = async (): Promise<string> => `${await dump(query, 'chain')}\n${logs()}`;

    // Ten start requests at once, through a node that is not the primary.
    const ids = Array.from({ length: EXECUTIONS }, (_, index) => `job-${index + 1}`);
    const offsets = await postEvents(
      survivors[0]?.url ?? '',
      ids.map((id) => ({ key: 'workflow.chain.start', namespace: 'wf', context: { startExecution: id } })),
    );
    expect(offsets).toHaveLength(EXECUTIONS);

    // Kill the primary once runs of both kinds (restarted on loss, and marked) run.
    const running = await waitOr(
      async () => {
        const rows = await query(`SELECT id, task FROM baton_task_runs WHERE state = 'running'`);
        const restarting = rows.filter((row) => RESTARTED.has(String(row['task'])));
        const marked = rows.filter((row) => row['task'] === 'transform');
        return restarting.length >= 2 && marked.length >= 2 ? rows : undefined;
      },
      120_000,
      'runs of fetch or store and of transform running at once',
      diagnose,
    );
    await first.stop('SIGKILL');
    const { primary: second, term: newTerm } = await agreedPrimary(survivors, 60_000);
    expect(newTerm).toBeGreaterThan(term);

    const executions = await allEnded(query, 'chain', EXECUTIONS, 240_000, diagnose);
    const runs = await runRows(query, 'chain');
    const context = `running at the kill: ${JSON.stringify(running)}\n${await diagnose()}`;

    // Which executions there are: one per start request, with the id it asked for.
    expect(
      executions.map((row) => [row['id'], row['trigger_offset']]),
      context,
    ).toEqual(ids.map((id, index) => [id, offsets[index]]));

    // Lost runs: those that ran on the killed node. A restarted kind has its restart in its execution.
    const lost = runs.filter((run) => run['state'] === 'lost');
    expect(
      lost.every((run) => run['node'] === nodeName(nodes, first)),
      context,
    ).toBe(true);
    expect(lost.filter((run) => RESTARTED.has(String(run['task']))).length, context).toBeGreaterThan(0);
    expect(lost.filter((run) => run['task'] === 'transform').length, context).toBeGreaterThan(0);
    for (const run of lost) {
      const restarts = runs.filter((other) => other['restart_of'] === run['id']);
      if (!RESTARTED.has(String(run['task']))) {
        expect(restarts, context).toEqual([]);
        continue;
      }
      expect(restarts, context).toHaveLength(1);
      const restart = restarts[0] as Row;
      expect(restart['execution']).toBe(run['execution']);
      expect(restart['task']).toBe(run['task']);
      expect(restart['trigger_offset']).toBe(run['trigger_offset']);
      expect(restart['attempt']).toBe(Number(run['attempt']) + 1);
      expect(restart['state'], context).toBe('succeeded');
      expect(restart['node']).toBe(nodeName(nodes, second));
    }

    // Every execution succeeded, or is lost by its lost transform (on_lost = "mark") and nothing else.
    for (const execution of executions) {
      const id = String(execution['id']);
      const mine = runs.filter((run) => run['execution'] === id);
      const lostHere = mine.filter((run) => run['state'] === 'lost');
      if (execution['state'] === 'lost') {
        expect(
          lostHere.map((run) => run['task']),
          `${id}\n${context}`,
        ).toEqual(['transform']);
        expect(execution['error']).toBe('task transform lost');
        expect(
          mine.some((run) => run['task'] === 'store'),
          `${id}\n${context}`,
        ).toBe(false);
        continue;
      }
      expect(execution['state'], `${id}\n${context}`).toBe('succeeded');
      expect(lostHere.every((run) => RESTARTED.has(String(run['task'])))).toBe(true);
      for (const task of TASKS) {
        const succeeded = mine.filter((run) => run['task'] === task && run['state'] === 'succeeded');
        expect(succeeded, `${task} in ${id}\n${context}`).toHaveLength(1);
      }
    }
    expect(executions.filter((row) => row['state'] === 'lost').length).toBe(
      lost.filter((run) => run['task'] === 'transform').length,
    );

    // Nothing started twice: per execution, task, triggering event and attempt one run; one first attempt
    // per execution and task; one execution per triggering event; every run by an event of its execution.
    const twice = await query(`
      SELECT execution, task, trigger_offset, attempt, count(*)::int AS n FROM baton_task_runs
      WHERE workflow = 'chain' GROUP BY 1, 2, 3, 4 HAVING count(*) > 1
      UNION ALL
      SELECT execution, task, NULL, 1, count(*)::int FROM baton_task_runs
      WHERE workflow = 'chain' AND attempt = 1 GROUP BY 1, 2 HAVING count(*) > 1`);
    expect(twice, context).toEqual([]);
    const doubleStarts = await query(`
      SELECT trigger_offset, count(*)::int AS n FROM baton_workflow_executions
      WHERE workflow = 'chain' GROUP BY 1 HAVING count(*) > 1`);
    expect(doubleStarts).toEqual([]);
    expect(runs.every((run) => Number(run['attempt']) <= 2)).toBe(true);
    expect(await foreignTriggers(query, 'chain'), context).toEqual([]);

    // What really ran, where the lines tell: each line is a run of the store's, in its execution, written
    // at most once per phase; a succeeded run wrote both of its lines.
    const lines = await taskLines(out);
    const byId = new Map(runs.map((run) => [String(run['id']), run]));
    for (const line of lines) {
      const run = byId.get(line.run);
      expect(run, `line of an unknown run: ${JSON.stringify(line)}`).toBeDefined();
      expect([run?.['execution'], run?.['task']]).toEqual([line.execution, line.task]);
    }
    for (const phase of ['start', 'end'] as const) {
      const ofPhase = lines.filter((line) => line.phase === phase).map((line) => line.run);
      expect(new Set(ofPhase).size, `${phase} lines`).toBe(ofPhase.length);
    }
    for (const run of runs.filter((row) => row['state'] === 'succeeded')) {
      const mine = lines.filter((line) => line.run === run['id']).map((line) => line.phase);
      expect(mine.sort(), `lines of run ${String(run['id'])}`).toEqual(['end', 'start']);
    }
  }, 400_000);
});
