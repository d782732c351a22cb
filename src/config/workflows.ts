// [workflows.<name>] (or a defineWorkflow() definition) → WorkflowConfig: tasks made runnable, `after`
// compiled into rules, the `after` graph checked for cycles, every name a rule or trigger uses checked, so
// that a mistake is refused at load with the key that holds it.
import { ConfigError } from '../errors.js';
import type { ParsedConfig } from './schema.js';
import type {
  Condition,
  EventCondition,
  LeafCondition,
  ScheduleConfig,
  TaskConfig,
  WorkflowConfig,
  WorkflowRuleConfig,
} from './types.js';
import { optionalFile, resolveHandler } from './where.js';

type ParsedWorkflow = ParsedConfig['workflows'][string];
type ParsedCondition = ParsedWorkflow['rules'][number]['on'];
type ParsedLeaf = NonNullable<ParsedCondition['all']>[number];

export interface WorkflowContext {
  readonly baseDir: string;
  readonly file: string | undefined;
  readonly schedules: Readonly<Record<string, ScheduleConfig>>;
  /** Where the workflow was read: "workflows.etl" (an error's key starts with it). */
  readonly where: string;
}

export function resolveWorkflows(
  parsed: ParsedConfig,
  baseDir: string,
  file: string | undefined,
  schedules: Readonly<Record<string, ScheduleConfig>>,
): Record<string, WorkflowConfig> {
  const workflows: Record<string, WorkflowConfig> = {};
  for (const [name, workflow] of Object.entries(parsed.workflows)) {
    if (!parsed.events.enabled) {
      throw new ConfigError('workflows need the event log (their tasks follow events): set it to true', {
        key: 'events.enabled',
        ...optionalFile(file),
      });
    }
    workflows[name] =
      workflow.module === undefined
        ? resolveWorkflow(name, workflow, { baseDir, file, schedules, where: `workflows.${name}` })
        : moduleWorkflow(name, resolveHandler(workflow.module, baseDir));
  }
  return workflows;
}

export function resolveWorkflow(
  name: string,
  workflow: ParsedWorkflow,
  context: WorkflowContext,
): WorkflowConfig {
  const fail = (key: string, message: string): ConfigError =>
    new ConfigError(message, { key: `${context.where}.${key}`, ...optionalFile(context.file) });
  const names = Object.keys(workflow.tasks);
  if (names.length === 0)
    throw fail('tasks', 'a workflow needs at least one task ([workflows.<name>.tasks.<task>])');
  const known = (task: string, key: string): string => {
    if (!names.includes(task)) {
      throw fail(key, `unknown task ${JSON.stringify(task)}: expected one of ${names.join(', ')}`);
    }
    return task;
  };

  const tasks: Record<string, TaskConfig> = {};
  const onLost: Record<string, 'mark' | 'restart'> = {};
  const after: Record<string, readonly string[]> = {};
  for (const [task, table] of Object.entries(workflow.tasks)) {
    tasks[task] = {
      name: task,
      command: table.command,
      module: table.module === undefined ? undefined : resolveHandler(table.module, context.baseDir),
      run: table.run,
      cwd: context.baseDir,
      namespace: workflow.namespace,
      timeoutMs: table.timeout_ms,
    };
    onLost[task] = table.on_lost;
    after[task] = table.after;
    for (const [index, upstream] of table.after.entries()) {
      known(upstream, `tasks.${task}.after[${index}]`);
      if (upstream === task)
        throw fail(`tasks.${task}.after[${index}]`, `task "${task}" cannot run after itself`);
    }
  }
  const cycle = findCycle(after);
  if (cycle) throw fail(`tasks.${cycle[0]}.after`, `the tasks' "after" form a cycle: ${cycle.join(' → ')}`);

  const rules: WorkflowRuleConfig[] = workflow.rules.map((rule, index) => ({
    index,
    on: condition(rule.on, `rules[${index}].on`, known, workflow.namespace),
    action: rule.action,
    task: known(rule.task, `rules[${index}].task`),
    source: `rules[${index}]`,
  }));
  for (const [task, table] of Object.entries(workflow.tasks)) {
    if (table.after.length === 0) continue;
    const parts = table.after.map((upstream): LeafCondition => ({
      kind: 'task',
      task: upstream,
      state: 'succeeded',
    }));
    rules.push({
      index: rules.length,
      on: parts.length === 1 ? (parts[0] as LeafCondition) : { kind: 'all', parts },
      action: 'start',
      task,
      source: `tasks.${task}.after`,
    });
  }
  const started = new Set(rules.filter((rule) => rule.action === 'start').map((rule) => rule.task));
  const initial = names.filter((task) => !started.has(task));
  if (initial.length === 0) {
    throw fail('tasks', 'no task starts when an execution starts: every task has a start rule or "after"');
  }

  const triggers = workflow.triggers.map((trigger, index): EventCondition => {
    if (trigger.schedule !== undefined) {
      const schedule = context.schedules[trigger.schedule];
      if (!schedule) {
        const schedules = Object.keys(context.schedules);
        throw fail(
          `triggers[${index}].schedule`,
          `unknown schedule ${JSON.stringify(trigger.schedule)}: ` +
            (schedules.length === 0
              ? 'no [schedules.<name>] table is defined'
              : `expected one of ${schedules.join(', ')}`),
        );
      }
      return {
        kind: 'event',
        namespace: schedule.namespace,
        key: `schedule.${schedule.name}.fired`,
        value: undefined,
      };
    }
    const on = trigger.on as NonNullable<typeof trigger.on>;
    return { kind: 'event', namespace: on.namespace ?? workflow.namespace, key: on.key, value: on.value };
  });

  return {
    name,
    namespace: workflow.namespace,
    tasks,
    onLost,
    after,
    initial,
    rules,
    triggers,
    maxConcurrent: workflow.max_concurrent,
    overLimit: workflow.over_limit,
  };
}

/** A workflow defined in a module, until the node loads it (loadWorkflowModules). */
function moduleWorkflow(name: string, module: string): WorkflowConfig {
  return {
    name,
    module,
    namespace: 'default',
    tasks: {},
    onLost: {},
    after: {},
    initial: [],
    rules: [],
    triggers: [],
    maxConcurrent: 0,
    overLimit: 'queue',
  };
}

function condition(
  on: ParsedCondition,
  key: string,
  known: (task: string, key: string) => string,
  namespace: string,
): Condition {
  if (on.all !== undefined)
    return { kind: 'all', parts: on.all.map((part, i) => leaf(part, `${key}.all[${i}]`, known, namespace)) };
  if (on.any !== undefined)
    return { kind: 'any', parts: on.any.map((part, i) => leaf(part, `${key}.any[${i}]`, known, namespace)) };
  return leaf(on, key, known, namespace);
}

function leaf(
  on: ParsedLeaf,
  key: string,
  known: (task: string, key: string) => string,
  namespace: string,
): LeafCondition {
  if (on.task !== undefined) {
    return { kind: 'task', task: known(on.task, `${key}.task`), state: on.state ?? 'succeeded' };
  }
  return { kind: 'event', namespace, key: on.key ?? '', value: on.value };
}

/** A cycle in the graph task → the tasks it runs after, as a path that ends where it starts; undefined if none. */
export function findCycle(after: Readonly<Record<string, readonly string[]>>): string[] | undefined {
  const done = new Set<string>();
  const path: string[] = [];
  const visit = (task: string): string[] | undefined => {
    const at = path.indexOf(task);
    if (at !== -1) return [...path.slice(at), task];
    if (done.has(task)) return undefined;
    path.push(task);
    for (const upstream of after[task] ?? []) {
      const cycle = visit(upstream);
      if (cycle) return cycle;
    }
    path.pop();
    done.add(task);
    return undefined;
  };
  for (const task of Object.keys(after)) {
    const cycle = visit(task);
    if (cycle) return cycle.reverse();
  }
  return undefined;
}
