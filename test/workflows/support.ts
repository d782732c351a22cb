// Helpers of the workflow tests on node processes: task commands that append a line when they start and
// when they end (task, execution, run, time, process group) so a test sees what really ran, SQL on the
// executions and runs with a dump of both when a wait times out, and the end of every task process group
// a test left behind (a command outlives its node killed with -9).
import { readFile } from 'node:fs/promises';

import type { TempProject } from '../support/process.js';
import { killStartedNodes, removeTempProjects } from '../support/process.js';
import { lines, tomlString, waitFor } from '../tasks/support.js';

export type Row = Record<string, unknown>;
/** Runs one SQL statement on the group's store (Baton's schema on the search path). */
export type Query = (statement: string) => Promise<Row[]>;

/** One line a task wrote: `start` or `end` of one run. */
export interface TaskLine {
  readonly phase: 'start' | 'end';
  readonly task: string;
  readonly execution: string;
  readonly run: string;
  /** Host clock, ms. */
  readonly ms: number;
  /** The run's shell: the leader of its process group. */
  readonly pid: number;
}

/**
 * A task's command (a TOML string): appends `start …` to `out`, runs `body`, appends `end …`. With
 * `set -e`, a failing body writes no end line.
 */
export function taskCommand(out: string, task: string, body: string): string {
  const line = (phase: string): string =>
    `echo "${phase} ${task} $BATON_EXECUTION $BATON_TASK_RUN $(date +%s%3N) $$" >> ${out}`;
  return tomlString(`set -e; ${line('start')}; ${body}; ${line('end')}`);
}

/** The lines the tasks wrote to `out`, in the order written. */
export async function taskLines(out: string): Promise<TaskLine[]> {
  return (await lines(out)).map((text) => {
    const [phase, task, execution, run, ms, pid] = text.split(' ');
    if ((phase !== 'start' && phase !== 'end') || !task || !execution || !run) {
      throw new Error(`${out}: unexpected line ${JSON.stringify(text)}`);
    }
    return { phase, task, execution, run, ms: Number(ms), pid: Number(pid) };
  });
}

/**
 * SIGKILLs the process group of every task run that wrote a start line to `out` and still runs, if its
 * command line names `marker` (a folder of the test's: a reused pid is never somebody else's group).
 */
export async function killTaskGroups(out: string, marker: string): Promise<void> {
  const pids = new Set((await taskLines(out).catch(() => [])).map((line) => line.pid));
  for (const pid of pids) {
    const command = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (!command.includes(marker)) continue;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // the group ended in between
    }
  }
}

/**
 * The afterEach of these tests: kills the nodes (so that they start no more tasks), then the process groups
 * of the tasks that wrote to `project`'s out.txt (a killed node's orphans among them), then removes the
 * folders.
 */
export async function endNodesAndTasks(project: TempProject | undefined): Promise<void> {
  await killStartedNodes();
  if (project) await killTaskGroups(project.path('out.txt'), project.dir);
  await removeTempProjects();
}

/** The executions of `workflow`, oldest trigger first. */
export async function executionRows(query: Query, workflow: string): Promise<Row[]> {
  return query(
    `SELECT id, state, trigger_offset::int AS trigger_offset, trigger_key, error, view::text AS view
     FROM baton_workflow_executions WHERE workflow = ${literal(workflow)} ORDER BY trigger_offset`,
  );
}

/** The runs of `workflow`'s executions, oldest first. */
export async function runRows(query: Query, workflow: string): Promise<Row[]> {
  return query(
    `SELECT id, execution, task, state, attempt, restart_of, restart_on_lost, trigger_offset::int AS trigger_offset,
            trigger_key, node, error,
            (extract(epoch FROM started_at) * 1000)::float8 AS started_ms,
            (extract(epoch FROM ended_at) * 1000)::float8 AS ended_ms
     FROM baton_task_runs WHERE workflow = ${literal(workflow)} ORDER BY created_at, id`,
  );
}

/** Executions and runs of `workflow`, one JSON row a line: what a timed-out test prints. */
export async function dump(query: Query, workflow: string): Promise<string> {
  try {
    const [executions, runs] = [await executionRows(query, workflow), await runRows(query, workflow)];
    const show = (rows: Row[]): string => rows.map((row) => JSON.stringify(row)).join('\n');
    return `--- executions of ${workflow}\n${show(executions)}\n--- runs\n${show(runs)}`;
  } catch (error) {
    return `--- could not read the executions of ${workflow}: ${String(error)}`;
  }
}

/** waitFor, whose timeout error ends with what `diagnose()` says (rows, a node's log). */
export async function waitOr<T>(
  probe: () => Promise<T | undefined | false>,
  timeoutMs: number,
  what: string,
  diagnose: () => Promise<string>,
): Promise<T> {
  try {
    return await waitFor(probe, timeoutMs, what);
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${await diagnose()}`, {
      cause: error,
    });
  }
}

/** Every execution of `workflow` once `count` of them exist and none is queued or running. */
export function allEnded(
  query: Query,
  workflow: string,
  count: number,
  timeoutMs: number,
  diagnose: () => Promise<string> = () => dump(query, workflow),
): Promise<Row[]> {
  return waitOr(
    async () => {
      const rows = await executionRows(query, workflow).catch(() => []);
      const open = rows.filter((row) => row['state'] === 'queued' || row['state'] === 'running');
      return rows.length >= count && open.length === 0 ? rows : undefined;
    },
    timeoutMs,
    `${count} ended executions of ${workflow}`,
    diagnose,
  );
}

/** An SQL string literal. */
export function literal(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/** POSTs events to a node; resolves with their offsets. */
export async function postEvents(
  url: string,
  events: ReadonlyArray<{ key: string; value?: string; namespace: string; context?: unknown }>,
): Promise<number[]> {
  const response = await fetch(`${url}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(events.length === 1 ? events[0] : { events }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await response.json()) as { events?: Array<{ offset: number }> };
  if (response.status !== 201) throw new Error(`POST /v1/events answered ${response.status}`);
  return (body.events ?? []).map((event) => Number(event.offset));
}

/** The execution an event's context names (undefined when it names none). */
export function contextExecution(context: unknown): string | undefined {
  if (typeof context !== 'string') return undefined;
  try {
    const parsed = JSON.parse(context) as { execution?: unknown };
    return typeof parsed.execution === 'string' ? parsed.execution : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The runs of `workflow` that an event of another execution (or of none) started: the event at a run's
 * trigger offset must name the run's execution in its context. None, when executions never cross-fire.
 */
export async function foreignTriggers(query: Query, workflow: string): Promise<Row[]> {
  const rows = await query(
    `SELECT r.id, r.task, r.execution, r.trigger_offset::int AS trigger_offset, e.key, e.context
     FROM baton_task_runs r LEFT JOIN baton_events e ON e."offset" = r.trigger_offset
     WHERE r.workflow = ${literal(workflow)}`,
  );
  return rows.filter((row) => contextExecution(row['context']) !== row['execution']);
}
