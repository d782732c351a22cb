// Workflow executions in the store (table baton_workflow_executions): what every node and the CLI may read,
// the stop requests anyone may record, and the changes that only the rule engine on the primary makes inside
// its fenced transactions. A change returns the row as it now is, so the caller appends its state event
// (workflow.<name>.<state>) in the same transaction.
import { sql, type SQL } from 'drizzle-orm';

import { InternalError, UnknownExecutionError } from '../errors.js';
import type { EventInput } from '../events/types.js';
import type { Row, Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';
import type { ExecutionView } from './conditions.js';
import { emptyView } from './conditions.js';
import type { ExecutionState } from './execution-states.js';
import { isExecutionState } from './execution-states.js';

export type { EndedExecutionState, ExecutionState } from './execution-states.js';
export { EXECUTION_STATES, isExecutionState } from './execution-states.js';

export interface Execution {
  readonly id: string;
  readonly workflow: string;
  readonly namespace: string;
  state: ExecutionState;
  /** Offset and key of the event that started it. */
  readonly triggerOffset: number;
  readonly triggerKey: string;
  /** The term and node of the primary that created it. */
  readonly term: number;
  readonly node: string;
  readonly createdAt: Date;
  startedAt: Date | undefined;
  endedAt: Date | undefined;
  error: string | undefined;
  readonly stopRequested: boolean;
  readonly view: ExecutionView;
}

export interface ExecutionQuery {
  /** Newest first, at most this many (default 100). */
  readonly limit?: number | undefined;
  readonly workflow?: string | undefined;
  readonly state?: ExecutionState | undefined;
  /** Only executions of these namespaces (a namespace-limited token); absent: all. */
  readonly namespaces?: readonly string[] | undefined;
}

export interface ExecutionStopRequest {
  readonly execution: Execution;
  /** False when it had already ended. */
  readonly requested: boolean;
}

const COLUMNS = sql.raw(`id, workflow, namespace, state, trigger_offset, trigger_key, view, term, node, error,
  stop_requested_at IS NOT NULL AS stop_requested,
  (extract(epoch FROM created_at) * 1000)::float8 AS created_ms,
  (extract(epoch FROM started_at) * 1000)::float8 AS started_ms,
  (extract(epoch FROM ended_at) * 1000)::float8 AS ended_ms`);

/** Executions, newest first. */
export async function listExecutions(store: Store, query: ExecutionQuery = {}): Promise<Execution[]> {
  const where: SQL[] = [sql`true`];
  if (query.workflow !== undefined) where.push(sql`workflow = ${query.workflow}`);
  if (query.state !== undefined) where.push(sql`state = ${query.state}`);
  if (query.namespaces !== undefined) {
    where.push(sql`namespace = ANY(${sql.param([...query.namespaces])}::text[])`);
  }
  const rows = await store.execute(sql`
    SELECT ${COLUMNS} FROM baton_workflow_executions WHERE ${sql.join(where, sql` AND `)}
    ORDER BY created_at DESC, id DESC LIMIT ${query.limit ?? 100}`);
  return rows.map(toExecution);
}

/** How many executions of each workflow are queued and running. */
export async function openExecutionCounts(
  store: Store,
): Promise<Record<string, { queued: number; running: number }>> {
  const rows = await store.execute(sql`
    SELECT workflow, state, count(*)::int AS n FROM baton_workflow_executions
    WHERE state IN ('queued', 'running') GROUP BY workflow, state`);
  const counts: Record<string, { queued: number; running: number }> = {};
  for (const row of rows) {
    const entry = (counts[String(row['workflow'])] ??= { queued: 0, running: 0 });
    if (row['state'] === 'queued') entry.queued = Number(row['n']);
    else entry.running = Number(row['n']);
  }
  return counts;
}

export async function getExecution(store: Store, id: string): Promise<Execution> {
  const [row] = await store.execute(sql`SELECT ${COLUMNS} FROM baton_workflow_executions WHERE id = ${id}`);
  if (!row) throw new UnknownExecutionError(id);
  return toExecution(row);
}

/**
 * Records a request to stop an execution and each of its runs that has not ended (any node may: the primary
 * carries it out). An execution that already ended is returned as it is, with `requested` false.
 */
export async function requestExecutionStop(store: Store, id: string): Promise<ExecutionStopRequest> {
  return store.transaction(async (tx) => {
    const [row] = await executeIn(
      tx,
      sql`
      UPDATE baton_workflow_executions SET stop_requested_at = coalesce(stop_requested_at, now())
      WHERE id = ${id} AND state IN ('queued', 'running') RETURNING ${COLUMNS}`,
    );
    if (!row) {
      const [ended] = await executeIn(
        tx,
        sql`SELECT ${COLUMNS} FROM baton_workflow_executions WHERE id = ${id}`,
      );
      if (!ended) throw new UnknownExecutionError(id);
      return { execution: toExecution(ended), requested: false };
    }
    await executeIn(
      tx,
      sql`
      UPDATE baton_task_runs SET stop_requested_at = coalesce(stop_requested_at, now())
      WHERE execution = ${id} AND state IN ('pending', 'running')`,
    );
    return { execution: toExecution(row), requested: true };
  });
}

/** Deletes executions that ended more than `olderThanMs` ago, in `tx` (fenced by the caller); returns how many. */
export async function pruneExecutions(tx: Tx, olderThanMs: number, limit = 10_000): Promise<number> {
  const rows = await executeIn(
    tx,
    sql`
    WITH gone AS (
      DELETE FROM baton_workflow_executions WHERE id = ANY(ARRAY(
        SELECT id FROM baton_workflow_executions
        WHERE ended_at < now() - make_interval(secs => ${olderThanMs / 1000})
        ORDER BY ended_at LIMIT ${limit}))
      RETURNING 1)
    SELECT count(*)::bigint AS n FROM gone`,
  );
  return Number(rows[0]?.['n'] ?? 0);
}

// The rule engine's writes. Each runs inside a transaction that the engine fenced.

export interface NewExecution {
  readonly id: string;
  readonly workflow: string;
  readonly namespace: string;
  readonly state: 'queued' | 'running';
  readonly triggerOffset: number;
  readonly triggerKey: string;
  readonly term: number;
  readonly node: string;
}

/** Inserts an execution; undefined when this event already started one of this workflow. */
export async function insertExecution(tx: Tx, execution: NewExecution): Promise<Execution | undefined> {
  const [row] = await executeIn(
    tx,
    sql`
    INSERT INTO baton_workflow_executions
      (id, workflow, namespace, state, trigger_offset, trigger_key, view, term, node, started_at)
    VALUES (${execution.id}, ${execution.workflow}, ${execution.namespace}, ${execution.state},
            ${execution.triggerOffset}, ${execution.triggerKey}, ${JSON.stringify(emptyView())}::jsonb,
            ${execution.term}, ${execution.node},
            ${execution.state === 'running' ? sql`now()` : sql`NULL`})
    ON CONFLICT DO NOTHING RETURNING ${COLUMNS}`,
  );
  return row ? toExecution(row) : undefined;
}

/** The executions of `ids` that exist, locked until the end of `tx`. */
export async function lockExecutions(tx: Tx, ids: readonly string[]): Promise<Execution[]> {
  if (ids.length === 0) return [];
  const rows = await executeIn(
    tx,
    sql`
    SELECT ${COLUMNS} FROM baton_workflow_executions WHERE id = ANY(${sql.param([...ids])}::text[])
    ORDER BY id FOR UPDATE`,
  );
  return rows.map(toExecution);
}

/** Writes back an execution's state, view and times as the engine changed them. */
export async function saveExecution(tx: Tx, execution: Execution): Promise<void> {
  await executeIn(
    tx,
    sql`
    UPDATE baton_workflow_executions
    SET state = ${execution.state}, view = ${JSON.stringify(execution.view)}::jsonb, error = ${execution.error ?? null},
        started_at = CASE WHEN ${execution.state} <> 'queued' THEN coalesce(started_at, now()) END,
        ended_at = CASE WHEN ${execution.state} IN ('queued', 'running') THEN NULL ELSE coalesce(ended_at, now()) END
    WHERE id = ${execution.id}`,
  );
}

/** Running executions of `workflow`. */
export async function countRunning(tx: Tx, workflow: string): Promise<number> {
  const rows = await executeIn(
    tx,
    sql`SELECT count(*)::int AS n FROM baton_workflow_executions WHERE workflow = ${workflow} AND state = 'running'`,
  );
  return Number(rows[0]?.['n'] ?? 0);
}

/** The oldest queued executions of `workflow`, locked, at most `limit`. */
export async function oldestQueued(tx: Tx, workflow: string, limit: number): Promise<Execution[]> {
  if (limit <= 0) return [];
  const rows = await executeIn(
    tx,
    sql`
    SELECT ${COLUMNS} FROM baton_workflow_executions WHERE workflow = ${workflow} AND state = 'queued'
    ORDER BY created_at, id LIMIT ${limit} FOR UPDATE`,
  );
  return rows.map(toExecution);
}

/** Queued or running executions with a stop request. */
export async function executionsToStop(store: Store): Promise<Execution[]> {
  const rows = await store.execute(sql`
    SELECT ${COLUMNS} FROM baton_workflow_executions
    WHERE state IN ('queued', 'running') AND stop_requested_at IS NOT NULL ORDER BY created_at, id`);
  return rows.map(toExecution);
}

/** The state event of an execution: key workflow.<name>.<state> in its namespace, the execution in its context. */
export function executionEvent(execution: Execution): EventInput {
  return {
    namespace: execution.namespace,
    key: `workflow.${execution.workflow}.${execution.state}`,
    value: execution.state,
    sender: 'baton',
    context: JSON.stringify({
      execution: execution.id,
      workflow: execution.workflow,
      state: execution.state,
      triggerOffset: execution.triggerOffset,
      ...(execution.error !== undefined ? { error: execution.error } : {}),
    }),
  };
}

function toExecution(row: Row): Execution {
  const state = row['state'];
  if (!isExecutionState(state)) {
    throw new InternalError(`workflow execution ${String(row['id'])}: unknown state ${String(state)}`);
  }
  const raw = row['view'];
  const parsed = (typeof raw === 'string' ? JSON.parse(raw) : raw) as Partial<ExecutionView> | null;
  return {
    id: String(row['id']),
    workflow: String(row['workflow']),
    namespace: String(row['namespace']),
    state,
    triggerOffset: Number(row['trigger_offset']),
    triggerKey: String(row['trigger_key']),
    term: Number(row['term']),
    node: String(row['node']),
    createdAt: new Date(Number(row['created_ms'])),
    startedAt: optionalDate(row['started_ms']),
    endedAt: optionalDate(row['ended_ms']),
    error: typeof row['error'] === 'string' ? row['error'] : undefined,
    stopRequested: row['stop_requested'] === true,
    view: {
      tasks: parsed?.tasks ?? {},
      open: parsed?.open ?? {},
      latest: parsed?.latest ?? {},
      seen: parsed?.seen ?? {},
    },
  };
}

function optionalDate(value: unknown): Date | undefined {
  return value === null || value === undefined ? undefined : new Date(Number(value));
}
