// The states of a task run, apart from the runs themselves (runs.ts), so that what only names them (the
// command line's help, a query's check) loads no database code.
export const TASK_RUN_STATES = ['pending', 'running', 'succeeded', 'failed', 'stopped', 'lost'] as const;
export type TaskRunState = (typeof TASK_RUN_STATES)[number];
/** The states a run ends in. */
export type EndedState = Exclude<TaskRunState, 'pending' | 'running'>;

export function isTaskRunState(value: unknown): value is TaskRunState {
  return typeof value === 'string' && (TASK_RUN_STATES as readonly string[]).includes(value);
}
