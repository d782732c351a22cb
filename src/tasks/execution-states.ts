// The states of a workflow execution, apart from the executions themselves (executions.ts), so that what
// only names them (the command line's help, a query's check) loads no database code.
export const EXECUTION_STATES = ['queued', 'running', 'succeeded', 'failed', 'stopped', 'lost'] as const;
export type ExecutionState = (typeof EXECUTION_STATES)[number];
export type EndedExecutionState = Exclude<ExecutionState, 'queued' | 'running'>;

export function isExecutionState(value: unknown): value is ExecutionState {
  return typeof value === 'string' && (EXECUTION_STATES as readonly string[]).includes(value);
}
