// Task runs in the store (table baton_task_runs): what every node and the CLI may read, the stop requests
// anyone may record, and the state changes that only the rule engine on the primary makes, inside its own
// fenced transactions. A state change returns the rows it changed, so the caller appends their state
// events (task.<name>.<state>) in the same transaction.
import { sql, type SQL } from 'drizzle-orm';

import { InternalError, UnknownTaskRunError } from '../errors.js';
import type { EventInput } from '../events/types.js';
import type { Row, Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';
import type { EndedState, TaskRunState } from './states.js';
import { isTaskRunState } from './states.js';

export type { EndedState, TaskRunState } from './states.js';
export { isTaskRunState, TASK_RUN_STATES } from './states.js';

export interface TaskRun {
  readonly id: string;
  readonly task: string;
  /** Position in [[rules]] of the rule that started it. */
  readonly rule: number;
  /** Offset and key of the event that triggered it. */
  readonly triggerOffset: number;
  readonly triggerKey: string;
  /** 1, plus one per restart of a lost run. */
  readonly attempt: number;
  /** The lost run this one restarts. */
  readonly restartOf: string | undefined;
  readonly namespace: string;
  readonly state: TaskRunState;
  readonly node: string | undefined;
  readonly term: number | undefined;
  readonly pid: number | undefined;
  readonly createdAt: Date;
  readonly startedAt: Date | undefined;
  readonly endedAt: Date | undefined;
  readonly exitCode: number | undefined;
  readonly error: string | undefined;
  readonly stopRequested: boolean;
  /** The workflow and execution the run belongs to; undefined for a run of a [tasks.<name>] table. */
  readonly workflow: string | undefined;
  readonly execution: string | undefined;
  /** Whether a new primary restarts the run when its node died (set when it was created). */
  readonly restartOnLost: boolean;
  /** A lost run that waits for its restart. */
  readonly restartPending: boolean;
}

export interface TaskRunQuery {
  /** Newest first, at most this many (default 100). */
  readonly limit?: number | undefined;
  readonly state?: TaskRunState | undefined;
  readonly task?: string | undefined;
  readonly id?: string | undefined;
  /** Only the runs of this workflow execution. */
  readonly execution?: string | undefined;
  /** Only runs of tasks in these namespaces (a namespace-limited token); absent: all. */
  readonly namespaces?: readonly string[] | undefined;
}

/** The outcome of a stop request: the run, and whether it was still pending or running. */
export interface StopRequest {
  readonly run: TaskRun;
  readonly requested: boolean;
}

const COLUMNS = sql.raw(`id, task, rule, trigger_offset, trigger_key, attempt, restart_of, namespace, state,
  node, term, pid, exit_code, error, stop_requested_at IS NOT NULL AS stop_requested,
  workflow, execution, restart_on_lost, restart_pending,
  (extract(epoch FROM created_at) * 1000)::float8 AS created_ms,
  (extract(epoch FROM started_at) * 1000)::float8 AS started_ms,
  (extract(epoch FROM ended_at) * 1000)::float8 AS ended_ms`);

/** Runs, newest first. */
export async function listTaskRuns(store: Store, query: TaskRunQuery = {}): Promise<TaskRun[]> {
  const where: SQL[] = [sql`true`];
  if (query.state !== undefined) where.push(sql`state = ${query.state}`);
  if (query.task !== undefined) where.push(sql`task = ${query.task}`);
  if (query.id !== undefined) where.push(sql`id = ${query.id}`);
  if (query.execution !== undefined) where.push(sql`execution = ${query.execution}`);
  if (query.namespaces !== undefined) {
    where.push(sql`namespace = ANY(${sql.param([...query.namespaces])}::text[])`);
  }
  const rows = await store.execute(sql`
    SELECT ${COLUMNS} FROM baton_task_runs WHERE ${sql.join(where, sql` AND `)}
    ORDER BY created_at DESC, id DESC LIMIT ${query.limit ?? 100}`);
  return rows.map(toTaskRun);
}

export async function getTaskRun(store: Store, id: string): Promise<TaskRun> {
  const [row] = await store.execute(sql`SELECT ${COLUMNS} FROM baton_task_runs WHERE id = ${id}`);
  if (!row) throw new UnknownTaskRunError(id);
  return toTaskRun(row);
}

/**
 * Records a request to stop a run (any node may: the primary carries it out). A run that already ended is
 * returned as it is, with `requested` false.
 */
export async function requestStop(store: Store, id: string): Promise<StopRequest> {
  const [row] = await store.execute(sql`
    UPDATE baton_task_runs SET stop_requested_at = coalesce(stop_requested_at, now())
    WHERE id = ${id} AND state IN ('pending', 'running') RETURNING ${COLUMNS}`);
  if (row) return { run: toTaskRun(row), requested: true };
  return { run: await getTaskRun(store, id), requested: false };
}

/** Deletes runs that ended more than `olderThanMs` ago, in `tx` (fenced by the caller); returns how many. */
export function pruneTaskRuns(tx: Tx, olderThanMs: number, limit = 10_000): Promise<number> {
  return pruneEnded(tx, 'baton_task_runs', olderThanMs, limit);
}

/** Deletes rows of `table` (its `ended_at`) that ended more than `olderThanMs` ago; returns how many. */
export async function pruneEnded(
  tx: Tx,
  table: 'baton_task_runs' | 'baton_workflow_executions',
  olderThanMs: number,
  limit: number,
): Promise<number> {
  const name = sql.identifier(table);
  const rows = await executeIn(
    tx,
    sql`
    WITH gone AS (
      DELETE FROM ${name} WHERE id = ANY(ARRAY(
        SELECT id FROM ${name}
        WHERE ended_at < now() - make_interval(secs => ${olderThanMs / 1000})
        ORDER BY ended_at LIMIT ${limit}))
      RETURNING 1)
    SELECT count(*)::bigint AS n FROM gone`,
  );
  return Number(rows[0]?.['n'] ?? 0);
}

// The rule engine's writes. Each runs inside a transaction that the engine fenced.

export interface NewTaskRun {
  readonly id: string;
  readonly task: string;
  readonly rule: number;
  readonly triggerOffset: number;
  readonly triggerKey: string;
  readonly namespace: string;
  readonly attempt?: number;
  readonly restartOf?: string;
  readonly workflow?: string | undefined;
  readonly execution?: string | undefined;
  readonly restartOnLost?: boolean;
}

/** Inserts a pending run; undefined when this event (or this restart) already has its run. */
export async function insertRun(tx: Tx, run: NewTaskRun): Promise<TaskRun | undefined> {
  const [row] = await executeIn(
    tx,
    sql`
    INSERT INTO baton_task_runs (id, task, rule, trigger_offset, trigger_key, namespace, attempt, restart_of,
                                 workflow, execution, restart_on_lost, state)
    VALUES (${run.id}, ${run.task}, ${run.rule}, ${run.triggerOffset}, ${run.triggerKey}, ${run.namespace},
            ${run.attempt ?? 1}, ${run.restartOf ?? null}, ${run.workflow ?? null}, ${run.execution ?? null},
            ${run.restartOnLost ?? false}, 'pending')
    ON CONFLICT DO NOTHING RETURNING ${COLUMNS}`,
  );
  return row ? toTaskRun(row) : undefined;
}

/**
 * Records a stop request for every pending or running run of `task`: outside any execution, or within
 * `execution` when given (every task of it when `task` is undefined); returns how many.
 */
export async function requestStopOfTask(
  tx: Tx,
  task: string | undefined,
  execution?: string,
): Promise<number> {
  const rows = await executeIn(
    tx,
    sql`
    UPDATE baton_task_runs SET stop_requested_at = coalesce(stop_requested_at, now())
    WHERE ${task === undefined ? sql`true` : sql`task = ${task}`}
      AND ${execution === undefined ? sql`execution IS NULL` : sql`execution = ${execution}`}
      AND state IN ('pending', 'running') RETURNING 1`,
  );
  return rows.length;
}

/** Pending runs, oldest first; `stopRequested` tells which ones must not start. */
export async function pendingRuns(store: Store): Promise<TaskRun[]> {
  const rows = await store.execute(
    sql`SELECT ${COLUMNS} FROM baton_task_runs WHERE state = 'pending' ORDER BY created_at, id`,
  );
  return rows.map(toTaskRun);
}

/** Running runs with a stop request. */
export async function runsToStop(store: Store): Promise<TaskRun[]> {
  const rows = await store.execute(sql`
    SELECT ${COLUMNS} FROM baton_task_runs
    WHERE state = 'running' AND stop_requested_at IS NOT NULL ORDER BY created_at, id`);
  return rows.map(toTaskRun);
}

/** pending → running on `node` under `term`; undefined when the run is no longer a startable pending run. */
export async function markRunning(
  tx: Tx,
  id: string,
  node: string,
  term: number,
): Promise<TaskRun | undefined> {
  const [row] = await executeIn(
    tx,
    sql`
    UPDATE baton_task_runs SET state = 'running', node = ${node}, term = ${term}, started_at = now()
    WHERE id = ${id} AND state = 'pending' AND stop_requested_at IS NULL RETURNING ${COLUMNS}`,
  );
  return row ? toTaskRun(row) : undefined;
}

export async function setPid(store: Store, id: string, pid: number): Promise<void> {
  await store.execute(sql`UPDATE baton_task_runs SET pid = ${pid} WHERE id = ${id} AND state = 'running'`);
}

/** Ends a run that is in one of `from`; undefined when it is not (it ended already). */
export async function endRun(
  tx: Tx,
  id: string,
  from: readonly ('pending' | 'running')[],
  outcome: { state: EndedState; exitCode?: number | undefined; error?: string | undefined },
): Promise<TaskRun | undefined> {
  const [row] = await executeIn(
    tx,
    sql`
    UPDATE baton_task_runs
    SET state = ${outcome.state}, ended_at = now(), exit_code = ${outcome.exitCode ?? null},
        error = ${outcome.error ?? null}
    WHERE id = ${id} AND state = ANY(${sql.param([...from])}::text[]) RETURNING ${COLUMNS}`,
  );
  return row ? toTaskRun(row) : undefined;
}

/**
 * Marks running runs lost: those of `ids`, or every running run when `ids` is undefined (a new primary
 * taking over). `restartRules` are the rules with on_lost = "restart": their lost runs wait for a restart.
 */
export async function markLost(
  tx: Tx,
  ids: readonly string[] | undefined,
  restartRules: readonly number[],
  error: string,
): Promise<TaskRun[]> {
  const which = ids === undefined ? sql`true` : sql`id = ANY(${sql.param([...ids])}::text[])`;
  const rows = await executeIn(
    tx,
    sql`
    UPDATE baton_task_runs
    SET state = 'lost', ended_at = now(), error = ${error},
        restart_pending = (restart_on_lost OR (execution IS NULL AND rule = ANY(${sql.param([...restartRules])}::int[])))
          AND stop_requested_at IS NULL
    WHERE state = 'running' AND ${which} RETURNING ${COLUMNS}`,
  );
  return rows.map(toTaskRun);
}

/** Lost runs that wait for a restart; their flag is cleared (the caller inserts the restarts in the same tx). */
export async function takeRestarts(tx: Tx): Promise<TaskRun[]> {
  const rows = await executeIn(
    tx,
    sql`
    UPDATE baton_task_runs SET restart_pending = false
    WHERE restart_pending RETURNING ${COLUMNS}`,
  );
  return rows.map(toTaskRun);
}

/** The state event of a run: key task.<name>.<state> in the task's namespace, the run in its context. */
export function stateEvent(run: TaskRun): EventInput {
  return {
    namespace: run.namespace,
    key: `task.${run.task}.${run.state}`,
    value: run.state,
    sender: 'baton',
    context: JSON.stringify({
      taskRun: run.id,
      task: run.task,
      state: run.state,
      triggerOffset: run.triggerOffset,
      attempt: run.attempt,
      ...(run.workflow !== undefined ? { workflow: run.workflow, execution: run.execution } : {}),
      ...(run.restartOf !== undefined ? { restartOf: run.restartOf } : {}),
      ...(run.state === 'lost' && run.restartPending ? { restarting: true } : {}),
      ...(run.exitCode !== undefined ? { exitCode: run.exitCode } : {}),
      ...(run.error !== undefined ? { error: run.error } : {}),
      ...(run.node !== undefined ? { node: run.node } : {}),
    }),
  };
}

function toTaskRun(row: Row): TaskRun {
  const state = row['state'];
  if (!isTaskRunState(state))
    throw new InternalError(`task run ${String(row['id'])}: unknown state ${String(state)}`);
  return {
    id: String(row['id']),
    task: String(row['task']),
    rule: Number(row['rule']),
    triggerOffset: Number(row['trigger_offset']),
    triggerKey: String(row['trigger_key']),
    attempt: Number(row['attempt']),
    restartOf: optionalText(row['restart_of']),
    namespace: String(row['namespace']),
    state,
    node: optionalText(row['node']),
    term: optionalNumber(row['term']),
    pid: optionalNumber(row['pid']),
    createdAt: new Date(Number(row['created_ms'])),
    startedAt: optionalDate(row['started_ms']),
    endedAt: optionalDate(row['ended_ms']),
    exitCode: optionalNumber(row['exit_code']),
    error: optionalText(row['error']),
    stopRequested: row['stop_requested'] === true,
    workflow: optionalText(row['workflow']),
    execution: optionalText(row['execution']),
    restartOnLost: row['restart_on_lost'] === true,
    restartPending: row['restart_pending'] === true,
  };
}

function optionalText(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

function optionalNumber(value: unknown): number | undefined {
  return value === null || value === undefined ? undefined : Number(value);
}

export function optionalDate(value: unknown): Date | undefined {
  return value === null || value === undefined ? undefined : new Date(Number(value));
}
