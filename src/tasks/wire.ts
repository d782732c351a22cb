// Task runs on the wire (GET /v1/tasks, the CLI's --json), in both directions: snake_case, ISO times, null for
// what is not known; the schemas read them back on the client's side.
import { z } from 'zod';

import type { TaskRun } from './runs.js';
import { TASK_RUN_STATES } from './runs.js';

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
    workflow: run.workflow ?? null,
    execution: run.execution ?? null,
  };
}

/** A nullable field read back as undefined when null. */
export const optional = <T extends z.ZodType>(schema: T) =>
  schema.nullable().transform((value) => value ?? undefined);
/** An ISO time read back as a Date. */
export const time = z.iso.datetime().transform((value) => new Date(value));

export const taskRunSchema = z
  .object({
    id: z.string(),
    task: z.string(),
    state: z.enum(TASK_RUN_STATES),
    rule: z.number(),
    trigger_offset: z.number(),
    trigger_key: z.string(),
    attempt: z.number(),
    restart_of: optional(z.string()),
    namespace: z.string(),
    node: optional(z.string()),
    term: optional(z.number()),
    pid: optional(z.number()),
    created_at: time,
    started_at: optional(time),
    ended_at: optional(time),
    exit_code: optional(z.number()),
    error: optional(z.string()),
    stop_requested: z.boolean(),
    workflow: optional(z.string()).optional(),
    execution: optional(z.string()).optional(),
  })
  .transform((row): TaskRun => ({
    id: row.id,
    task: row.task,
    state: row.state,
    rule: row.rule,
    triggerOffset: row.trigger_offset,
    triggerKey: row.trigger_key,
    attempt: row.attempt,
    restartOf: row.restart_of,
    namespace: row.namespace,
    node: row.node,
    term: row.term,
    pid: row.pid,
    createdAt: row.created_at,
    startedAt: row.started_at,
    endedAt: row.ended_at,
    exitCode: row.exit_code,
    error: row.error,
    stopRequested: row.stop_requested,
    workflow: row.workflow,
    execution: row.execution,
    restartOnLost: false,
    restartPending: false,
  }));

export const taskRunsReply = z.object({ runs: z.array(taskRunSchema) });
export const stopReply = z.object({ run: taskRunSchema, requested: z.boolean() });
