// Task runs as JSON on the HTTP API (snake_case, ISO times, null for what is not known) and back.
import type { Row } from '../store/store.js';
import type { TaskRun } from './runs.js';
import { isTaskRunState } from './runs.js';

export function taskRunJson(run: TaskRun): Record<string, unknown> {
  return {
    id: run.id,
    task: run.task,
    state: run.state,
    rule: run.rule,
    trigger_offset: run.triggerOffset,
    trigger_key: run.triggerKey,
    attempt: run.attempt,
    restart_of: run.restartOf ?? null,
    namespace: run.namespace,
    node: run.node ?? null,
    term: run.term ?? null,
    pid: run.pid ?? null,
    created_at: run.createdAt.toISOString(),
    started_at: run.startedAt?.toISOString() ?? null,
    ended_at: run.endedAt?.toISOString() ?? null,
    exit_code: run.exitCode ?? null,
    error: run.error ?? null,
    stop_requested: run.stopRequested,
  };
}

export function taskRunFromJson(row: Row): TaskRun {
  const state = row['state'];
  if (!isTaskRunState(state)) throw new Error(`a task run with an unknown state: ${String(state)}`);
  const text = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
  const number = (value: unknown): number | undefined => (typeof value === 'number' ? value : undefined);
  const date = (value: unknown): Date | undefined =>
    typeof value === 'string' ? new Date(value) : undefined;
  return {
    id: String(row['id']),
    task: String(row['task']),
    state,
    rule: Number(row['rule']),
    triggerOffset: Number(row['trigger_offset']),
    triggerKey: String(row['trigger_key']),
    attempt: Number(row['attempt']),
    restartOf: text(row['restart_of']),
    namespace: String(row['namespace']),
    node: text(row['node']),
    term: number(row['term']),
    pid: number(row['pid']),
    createdAt: new Date(String(row['created_at'])),
    startedAt: date(row['started_at']),
    endedAt: date(row['ended_at']),
    exitCode: number(row['exit_code']),
    error: text(row['error']),
    stopRequested: row['stop_requested'] === true,
  };
}
