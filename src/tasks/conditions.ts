// What fires a workflow's rule, given one event of its execution and the execution's view: pure, so the
// engine and its tests agree. An event condition is met by an event that matches it; a task condition
// holds while the task's latest run in the execution is in its state, and is looked at only when a state
// event of that task arrives (as AIFlow evaluates a condition only on the keys it expects). `all` keeps the
// event parts it has met in the view until every part holds, fires, and starts over.
import type { Condition, EventCondition, LeafCondition, WorkflowRuleConfig } from '../config/types.js';
import type { StoredEvent } from '../events/types.js';
import type { TaskRunState } from './states.js';

/** The engine's picture of one execution, changed only by the events of the execution, in their order. */
export interface ExecutionView {
  /** The state of each task's latest run, as its state events said. */
  tasks: Record<string, TaskRunState>;
  /** Runs not ended yet (run id → task), and lost runs waiting for their restart. */
  open: Record<string, string>;
  /** Task → its latest run (the one whose states `tasks` shows). */
  latest: Record<string, string>;
  /** Rule index → the parts of its `all` condition met so far by events. */
  seen: Record<string, number[]>;
}

export function emptyView(): ExecutionView {
  return { tasks: {}, open: {}, latest: {}, seen: {} };
}

/** A state event of a task run of an execution, as its context says. */
export interface RunStateEvent {
  readonly taskRun: string;
  readonly task: string;
  readonly state: TaskRunState;
  readonly restartOf: string | undefined;
  readonly restarting: boolean;
}

const patterns = new Map<string, RegExp>();

/** Whether `key` matches `pattern`, where `*` stands for any run of characters (none included). */
export function keyMatches(pattern: string, key: string): boolean {
  if (!pattern.includes('*')) return pattern === key;
  let regexp = patterns.get(pattern);
  if (!regexp) {
    const source = pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'));
    regexp = new RegExp(`^${source.join('.*')}$`, 's');
    if (patterns.size > 10_000) patterns.clear();
    patterns.set(pattern, regexp);
  }
  return regexp.test(key);
}

export function eventMatches(condition: EventCondition, event: StoredEvent): boolean {
  return (
    condition.namespace === event.namespace &&
    keyMatches(condition.key, event.key) &&
    (condition.value === undefined || condition.value === event.value)
  );
}

/** Whether `leaf` concerns this event: an event that matches it, or a state event of its task. */
function touches(leaf: LeafCondition, event: StoredEvent, state: RunStateEvent | undefined): boolean {
  return leaf.kind === 'event' ? eventMatches(leaf, event) : state?.task === leaf.task;
}

function holds(leaf: LeafCondition, view: ExecutionView): boolean {
  return leaf.kind === 'task' && view.tasks[leaf.task] === leaf.state;
}

/**
 * Whether `rule` fires on `event` (an event of the execution, `state` its run state when it is one), the
 * view already updated by it. Updates the view's `seen` parts of an `all` condition.
 */
export function fires(
  rule: WorkflowRuleConfig,
  event: StoredEvent,
  state: RunStateEvent | undefined,
  view: ExecutionView,
): boolean {
  const on: Condition = rule.on;
  if (on.kind === 'event') return eventMatches(on, event);
  if (on.kind === 'task') return touches(on, event, state) && holds(on, view);
  if (on.kind === 'any') {
    return on.parts.some((part) =>
      part.kind === 'event' ? eventMatches(part, event) : touches(part, event, state) && holds(part, view),
    );
  }
  const touched = on.parts.map((part) => touches(part, event, state));
  if (!touched.includes(true)) return false;
  const key = String(rule.index);
  const seen = new Set(view.seen[key] ?? []);
  on.parts.forEach((part, index) => {
    if (part.kind === 'event' && touched[index]) seen.add(index);
  });
  const met = on.parts.every((part, index) => (part.kind === 'event' ? seen.has(index) : holds(part, view)));
  if (met || seen.size === 0) delete view.seen[key];
  else view.seen[key] = [...seen].sort((a, b) => a - b);
  return met;
}
