// What `baton workflows` and GET /v1/workflows show: each workflow of the config (its tasks, `after`,
// rules and triggers) with its queued and running executions, and one execution with its runs and its
// tasks in DAG order. Pure: the admin reads the store, this shapes what it read.
import type { EventCondition, WorkflowConfig, WorkflowRuleConfig } from '../config/types.js';
import type { Execution, ExecutionQuery } from './executions.js';
import type { TaskRun } from './runs.js';
import type { TaskRunState } from './states.js';

/** How a task runs: a shell command, a module, or a function given in code (defineWorkflow). */
export type WorkflowTaskKind = 'command' | 'module' | 'function';

export interface WorkflowTaskStatus {
  readonly name: string;
  readonly kind: WorkflowTaskKind;
  /** The tasks it runs after (its `after`), as configured. */
  readonly after: readonly string[];
  readonly onLost: 'mark' | 'restart';
}

export interface WorkflowStatus {
  readonly name: string;
  readonly namespace: string;
  /** 0: no limit. */
  readonly maxConcurrent: number;
  readonly overLimit: 'queue' | 'skip';
  readonly triggers: readonly EventCondition[];
  readonly tasks: readonly WorkflowTaskStatus[];
  /** Its [[rules]], then its tasks' `after` compiled into rules (source "tasks.<task>.after"). */
  readonly rules: readonly WorkflowRuleConfig[];
  /** Its executions queued and running now. */
  readonly queued: number;
  readonly running: number;
}

/** The workflows of the config and the latest executions. */
export interface WorkflowListing {
  readonly workflows: readonly WorkflowStatus[];
  /** Newest first. */
  readonly executions: readonly Execution[];
}

/** A task of an execution's DAG: what starts it, and the state of its latest run in the execution. */
export interface DagTask {
  readonly name: string;
  readonly after: readonly string[];
  /** The sources of the rules that start it ("rules[0]", "tasks.load.after"); empty: it starts with the execution. */
  readonly startedBy: readonly string[];
  /** Undefined: no run of it in this execution (yet). */
  readonly state: TaskRunState | undefined;
}

export interface ExecutionDetail {
  readonly execution: Execution;
  /** Its task runs, oldest first. */
  readonly runs: readonly TaskRun[];
  /** Its workflow's tasks in DAG order, from the config of the node that answered (empty when not configured there). */
  readonly dag: readonly DagTask[];
}

/** What a start request did: the event appended, and the id the execution will have. */
export interface StartedExecution {
  readonly workflow: string;
  readonly execution: string;
  /** Offset of the start event (workflow.<name>.start). */
  readonly offset: number;
}

export type OpenCounts = Readonly<Record<string, { readonly queued: number; readonly running: number }>>;

/** The configured workflows that `query` selects (by name and by namespace), with their open counts. */
export function workflowStatuses(
  workflows: Readonly<Record<string, WorkflowConfig>>,
  counts: OpenCounts,
  query: Pick<ExecutionQuery, 'workflow' | 'namespaces'> = {},
): WorkflowStatus[] {
  return visibleWorkflows(workflows, query.namespaces)
    .filter((workflow) => query.workflow === undefined || workflow.name === query.workflow)
    .map((workflow) => ({
      name: workflow.name,
      namespace: workflow.namespace,
      maxConcurrent: workflow.maxConcurrent,
      overLimit: workflow.overLimit,
      triggers: workflow.triggers,
      tasks: Object.values(workflow.tasks).map((task) => ({
        name: task.name,
        kind: task.run !== undefined ? 'function' : task.command !== undefined ? 'command' : 'module',
        after: workflow.after[task.name] ?? [],
        onLost: workflow.onLost[task.name] ?? 'mark',
      })),
      rules: workflow.rules,
      queued: counts[workflow.name]?.queued ?? 0,
      running: counts[workflow.name]?.running ?? 0,
    }));
}

/** The workflows a token limited to `namespaces` may see: all when undefined. */
export function visibleWorkflows(
  workflows: Readonly<Record<string, WorkflowConfig>>,
  namespaces: readonly string[] | undefined,
): WorkflowConfig[] {
  return Object.values(workflows).filter(
    (workflow) => namespaces === undefined || namespaces.includes(workflow.namespace),
  );
}

/**
 * The tasks of `workflow` in DAG order (a task after those it runs after or whose state starts it, else in
 * config order; a cycle of rules is broken in config order), with their state in `execution`.
 */
export function executionDag(workflow: WorkflowConfig | undefined, execution: Execution): DagTask[] {
  if (!workflow) return [];
  const names = Object.keys(workflow.tasks);
  const upstream = new Map<string, Set<string>>(names.map((name) => [name, new Set(workflow.after[name])]));
  for (const rule of workflow.rules) {
    if (rule.action === 'stop') continue;
    for (const leaf of leaves(rule)) {
      if (leaf.kind === 'task' && leaf.task !== rule.task) upstream.get(rule.task)?.add(leaf.task);
    }
  }
  const placed = new Set<string>();
  const order: string[] = [];
  while (order.length < names.length) {
    const left = names.filter((name) => !placed.has(name));
    const next =
      left.find((name) => [...(upstream.get(name) ?? [])].every((task) => placed.has(task))) ?? left[0];
    if (next === undefined) break;
    placed.add(next);
    order.push(next);
  }
  return order.map((name) => ({
    name,
    after: workflow.after[name] ?? [],
    startedBy: workflow.rules
      .filter((rule) => rule.task === name && rule.action !== 'stop')
      .map((rule) => rule.source),
    state: execution.view.tasks[name],
  }));
}

function leaves(rule: WorkflowRuleConfig) {
  const on = rule.on;
  return on.kind === 'all' || on.kind === 'any' ? on.parts : [on];
}
