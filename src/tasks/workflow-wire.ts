// Workflows and their executions on the wire (GET /v1/workflows, GET /v1/workflows/executions/:id, the
// start and stop routes, the CLI's --json), in both directions: snake_case, ISO times, null for what is not
// known; the schemas read them back on the client's side. An execution read back carries the tasks' states
// of its view, not the engine's bookkeeping (open runs, `all` parts met).
import { z } from 'zod';

import { conditionInput } from '../config/as-input.js';
import type { LeafCondition, WorkflowRuleConfig } from '../config/types.js';
import { EXECUTION_STATES } from './execution-states.js';
import type { Execution } from './executions.js';
import { TASK_RUN_STATES } from './states.js';
import { optional, taskRunJson, taskRunSchema, time } from './wire.js';
import type {
  DagTask,
  ExecutionDetail,
  StartedExecution,
  WorkflowListing,
  WorkflowStatus,
} from './workflow-status.js';

export function executionJson(execution: Execution): Record<string, unknown> {
  return {
    id: execution.id,
    workflow: execution.workflow,
    namespace: execution.namespace,
    state: execution.state,
    trigger_offset: execution.triggerOffset,
    trigger_key: execution.triggerKey,
    term: execution.term,
    node: execution.node,
    created_at: execution.createdAt.toISOString(),
    started_at: execution.startedAt?.toISOString() ?? null,
    ended_at: execution.endedAt?.toISOString() ?? null,
    error: execution.error ?? null,
    stop_requested: execution.stopRequested,
    tasks: execution.view.tasks,
  };
}

export function workflowJson(workflow: WorkflowStatus): Record<string, unknown> {
  return {
    name: workflow.name,
    namespace: workflow.namespace,
    max_concurrent: workflow.maxConcurrent,
    over_limit: workflow.overLimit,
    triggers: workflow.triggers.map((trigger) => ({
      namespace: trigger.namespace,
      key: trigger.key,
      value: trigger.value ?? null,
    })),
    tasks: workflow.tasks.map((task) => ({
      name: task.name,
      kind: task.kind,
      after: task.after,
      on_lost: task.onLost,
    })),
    rules: workflow.rules.map((rule) => ({
      index: rule.index,
      source: rule.source,
      action: rule.action,
      task: rule.task,
      on: conditionInput(rule.on),
    })),
    queued: workflow.queued,
    running: workflow.running,
  };
}

export function workflowListingJson(listing: WorkflowListing): Record<string, unknown> {
  return {
    workflows: listing.workflows.map(workflowJson),
    executions: listing.executions.map(executionJson),
  };
}

export function executionDetailJson(detail: ExecutionDetail): Record<string, unknown> {
  return {
    execution: executionJson(detail.execution),
    runs: detail.runs.map(taskRunJson),
    dag: {
      tasks: detail.dag.map((task) => ({
        name: task.name,
        after: task.after,
        started_by: task.startedBy,
        state: task.state ?? null,
      })),
    },
  };
}

export function startedJson(started: StartedExecution): Record<string, unknown> {
  return { workflow: started.workflow, execution: started.execution, offset: started.offset };
}

export const executionSchema = z
  .object({
    id: z.string(),
    workflow: z.string(),
    namespace: z.string(),
    state: z.enum(EXECUTION_STATES),
    trigger_offset: z.number(),
    trigger_key: z.string(),
    term: z.number(),
    node: z.string(),
    created_at: time,
    started_at: optional(time),
    ended_at: optional(time),
    error: optional(z.string()),
    stop_requested: z.boolean(),
    tasks: z.record(z.string(), z.enum(TASK_RUN_STATES)),
  })
  .transform((row): Execution => ({
    id: row.id,
    workflow: row.workflow,
    namespace: row.namespace,
    state: row.state,
    triggerOffset: row.trigger_offset,
    triggerKey: row.trigger_key,
    term: row.term,
    node: row.node,
    createdAt: row.created_at,
    startedAt: row.started_at,
    endedAt: row.ended_at,
    error: row.error,
    stopRequested: row.stop_requested,
    view: { tasks: row.tasks, open: {}, latest: {}, seen: {} },
  }));

const leafSchema = z.union([
  z.object({ task: z.string(), state: z.enum(TASK_RUN_STATES) }),
  z.object({ key: z.string(), value: z.string().optional() }),
]);
type LeafWire = z.infer<typeof leafSchema>;
const conditionSchema = z.union([
  z.object({ all: z.array(leafSchema) }),
  z.object({ any: z.array(leafSchema) }),
  leafSchema,
]);

/** A rule's event conditions are in its workflow's namespace, which the wire leaves out. */
function leafOf(leaf: LeafWire, namespace: string): LeafCondition {
  return 'task' in leaf
    ? { kind: 'task', task: leaf.task, state: leaf.state }
    : { kind: 'event', namespace, key: leaf.key, value: leaf.value };
}

const workflowSchema = z
  .object({
    name: z.string(),
    namespace: z.string(),
    max_concurrent: z.number(),
    over_limit: z.enum(['queue', 'skip']),
    triggers: z.array(z.object({ namespace: z.string(), key: z.string(), value: optional(z.string()) })),
    tasks: z.array(
      z.object({
        name: z.string(),
        kind: z.enum(['command', 'module', 'function']),
        after: z.array(z.string()),
        on_lost: z.enum(['mark', 'restart']),
      }),
    ),
    rules: z.array(
      z.object({
        index: z.number(),
        source: z.string(),
        action: z.enum(['start', 'stop', 'restart']),
        task: z.string(),
        on: conditionSchema,
      }),
    ),
    queued: z.number(),
    running: z.number(),
  })
  .transform((row): WorkflowStatus => ({
    name: row.name,
    namespace: row.namespace,
    maxConcurrent: row.max_concurrent,
    overLimit: row.over_limit,
    triggers: row.triggers.map((trigger) => ({ kind: 'event', ...trigger })),
    tasks: row.tasks.map((task) => ({
      name: task.name,
      kind: task.kind,
      after: task.after,
      onLost: task.on_lost,
    })),
    rules: row.rules.map((rule): WorkflowRuleConfig => ({
      index: rule.index,
      source: rule.source,
      action: rule.action,
      task: rule.task,
      on:
        'all' in rule.on
          ? { kind: 'all', parts: rule.on.all.map((leaf) => leafOf(leaf, row.namespace)) }
          : 'any' in rule.on
            ? { kind: 'any', parts: rule.on.any.map((leaf) => leafOf(leaf, row.namespace)) }
            : leafOf(rule.on, row.namespace),
    })),
    queued: row.queued,
    running: row.running,
  }));

export const workflowsReply = z.object({
  workflows: z.array(workflowSchema),
  executions: z.array(executionSchema),
});

const dagTaskSchema = z
  .object({
    name: z.string(),
    after: z.array(z.string()),
    started_by: z.array(z.string()),
    state: optional(z.enum(TASK_RUN_STATES)),
  })
  .transform((row): DagTask => ({
    name: row.name,
    after: row.after,
    startedBy: row.started_by,
    state: row.state,
  }));

export const executionDetailReply = z
  .object({
    execution: executionSchema,
    runs: z.array(taskRunSchema),
    dag: z.object({ tasks: z.array(dagTaskSchema) }),
  })
  .transform((reply): ExecutionDetail => ({ ...reply, dag: reply.dag.tasks }));

export const startedReply = z.object({ workflow: z.string(), execution: z.string(), offset: z.number() });

export const executionStopReply = z.object({ execution: executionSchema, requested: z.boolean() });
