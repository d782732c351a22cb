// Workflows inside the rule engine: the part of each batch that starts executions (triggers, start
// requests), follows each execution's events in their order (the view: task states, open runs, `all`
// parts met), fires its rules, and ends it when no run of it is left. Everything happens in the engine's
// fenced transaction that commits the listener offset, so an event is applied to workflows once.
import { randomUUID } from 'node:crypto';

import type { TaskConfig, WorkflowConfig, WorkflowRuleConfig } from '../config/types.js';
import type { EventInput, StoredEvent } from '../events/types.js';
import type { Logger } from '../log.js';
import type { Tx } from '../store/store.js';
import type { RunStateEvent } from './conditions.js';
import { eventMatches, fires } from './conditions.js';
import type { EndedExecutionState, Execution } from './executions.js';
import {
  countRunning,
  executionEvent,
  insertExecution,
  lockExecutions,
  oldestQueued,
  saveExecution,
} from './executions.js';
import type { TaskRun } from './runs.js';
import { insertRun, requestStopOfTask, stateEvent } from './runs.js';
import { isTaskRunState } from './states.js';

/** The rule index of the runs an execution starts when it starts (its tasks that no rule starts). */
export const INITIAL_RULE = -1;
/** Execution ids given in a start request: what a uuid or a caller's own id may look like. */
export const EXECUTION_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

/** The key of the event that asks for a new execution of `workflow` (`baton workflows start`). */
export function startKey(workflow: string): string {
  return `workflow.${workflow}.start`;
}

interface EventContext {
  readonly execution: string | undefined;
  /** The task run that sent the event, when a run did. */
  readonly taskRun: string | undefined;
  readonly workflow: string | undefined;
  readonly startExecution: string | undefined;
  readonly run: RunStateEvent | undefined;
}

/** What one batch changed: executions read or created (locked), and the running count of each workflow. */
interface Batch {
  readonly tx: Tx;
  readonly term: number;
  readonly executions: Map<string, Execution>;
  readonly changed: Set<Execution>;
  readonly running: Map<string, number>;
  readonly out: EventInput[];
  readonly ended: EndedExecution[];
}

/** An execution a batch ended, and how. */
export interface EndedExecution {
  readonly workflow: string;
  readonly state: EndedExecutionState;
}

/** What a batch's transaction must append, and the executions it ended (told once it committed). */
export interface WorkflowEffects {
  readonly events: EventInput[];
  readonly ended: EndedExecution[];
}

function newBatch(tx: Tx, term: number, executions: readonly Execution[]): Batch {
  return {
    tx,
    term,
    executions: new Map(executions.map((execution) => [execution.id, execution])),
    changed: new Set(),
    running: new Map(),
    out: [],
    ended: [],
  };
}

export class Workflows {
  readonly #workflows: Readonly<Record<string, WorkflowConfig>>;
  readonly #node: string;
  readonly #log: Logger;

  constructor(workflows: Readonly<Record<string, WorkflowConfig>>, node: string, log: Logger) {
    this.#workflows = workflows;
    this.#node = node;
    this.#log = log.child({ part: 'workflows' });
  }

  get configured(): boolean {
    return Object.keys(this.#workflows).length > 0;
  }

  /** The config of a run's task: its workflow's, or undefined when that is not configured here. */
  task(workflow: string, task: string): TaskConfig | undefined {
    return this.#workflows[workflow]?.tasks[task];
  }

  /** Applies `events` to the workflows, in `tx`; returns the events to append in the same transaction. */
  async apply(tx: Tx, term: number, events: readonly StoredEvent[]): Promise<WorkflowEffects> {
    const read = events.map((event) => ({ event, context: eventContext(event) }));
    const ids = [...new Set(read.flatMap(({ context }) => (context.execution ? [context.execution] : [])))];
    const batch = newBatch(tx, term, await lockExecutions(tx, ids));
    for (const { event, context } of read) {
      for (const workflow of Object.values(this.#workflows)) {
        if (this.#triggers(workflow, event, context)) await this.#start(batch, workflow, event, context);
      }
      const execution = context.execution === undefined ? undefined : batch.executions.get(context.execution);
      if (execution?.state === 'running') await this.#follow(batch, execution, event, context);
    }
    return this.#settle(batch);
  }

  /**
   * Ends executions whose stop was requested and that have no run left (or never started), in `tx`;
   * returns the events to append.
   */
  async stop(tx: Tx, term: number, requested: readonly Execution[]): Promise<WorkflowEffects> {
    const ids = requested.map((execution) => execution.id);
    const batch = newBatch(tx, term, await lockExecutions(tx, ids));
    for (const execution of batch.executions.values()) {
      const open = Object.keys(execution.view.open).length > 0;
      if (execution.state === 'queued' || (execution.state === 'running' && !open)) {
        await this.#end(batch, execution, 'stopped', undefined);
      }
    }
    return this.#settle(batch);
  }

  /** Writes back what the batch changed; its effects. */
  async #settle(batch: Batch): Promise<WorkflowEffects> {
    for (const execution of batch.changed) await saveExecution(batch.tx, execution);
    return { events: batch.out, ended: batch.ended };
  }

  #triggers(workflow: WorkflowConfig, event: StoredEvent, context: EventContext): boolean {
    if (event.namespace === workflow.namespace && event.key === startKey(workflow.name)) return true;
    // An execution's own events never trigger its workflow again.
    if (event.sender === 'baton' && context.workflow === workflow.name) return false;
    return workflow.triggers.some((trigger) => eventMatches(trigger, event));
  }

  async #start(
    batch: Batch,
    workflow: WorkflowConfig,
    event: StoredEvent,
    context: EventContext,
  ): Promise<void> {
    const running = await this.#running(batch, workflow.name);
    const busy = workflow.maxConcurrent > 0 && running >= workflow.maxConcurrent;
    if (busy && workflow.overLimit === 'skip') {
      this.#log.info(
        { workflow: workflow.name, offset: event.offset, running },
        `execution of ${workflow.name} skipped: ${running} of max_concurrent = ${workflow.maxConcurrent} running`,
      );
      return;
    }
    const requested = context.startExecution;
    const execution = await insertExecution(batch.tx, {
      id: requested !== undefined && EXECUTION_ID.test(requested) ? requested : randomUUID(),
      workflow: workflow.name,
      namespace: workflow.namespace,
      state: busy ? 'queued' : 'running',
      triggerOffset: event.offset,
      triggerKey: event.key,
      term: batch.term,
      node: this.#node,
    });
    if (!execution) return; // this event already started one (or the requested id is taken)
    if (!busy) batch.running.set(workflow.name, running + 1);
    batch.executions.set(execution.id, execution);
    batch.out.push(executionEvent(execution));
    this.#log.info(
      { workflow: workflow.name, execution: execution.id, offset: event.offset },
      `execution ${execution.id} of ${workflow.name} ${execution.state} (event ${event.offset} ${event.key})`,
    );
  }

  /** One event of a running execution: the view follows it, rules fire, and the execution may end. */
  async #follow(
    batch: Batch,
    execution: Execution,
    event: StoredEvent,
    context: EventContext,
  ): Promise<void> {
    const workflow = this.#workflows[execution.workflow];
    batch.changed.add(execution);
    if (!workflow) {
      await this.#end(
        batch,
        execution,
        'failed',
        `workflow "${execution.workflow}" is not configured on this node`,
      );
      return;
    }
    const { view } = execution;
    const run = context.run;
    if (!run && context.taskRun !== undefined && !this.#current(execution, context.taskRun)) {
      // Sent by a run that ended, was lost (and perhaps restarted) or is not of this execution: a lost
      // run still alive on a dead node must not fire the rules of the run that replaced it.
      this.#log.info(
        { workflow: workflow.name, execution: execution.id, taskRun: context.taskRun, offset: event.offset },
        `event ${event.offset} ${event.key} ignored: its run is no longer the current run of its task`,
      );
      return;
    }
    if (run) {
      const latest = view.latest[run.task];
      if (run.state === 'pending') {
        if (run.restartOf !== undefined) delete view.open[run.restartOf];
        view.open[run.taskRun] = run.task;
        view.latest[run.task] = run.taskRun;
        view.tasks[run.task] = 'pending';
        // A restart of a lost run, created after the execution was asked to stop: stop it too.
        if (execution.stopRequested) await requestStopOfTask(batch.tx, run.task, execution.id);
      } else {
        if (run.state === 'running' || (run.state === 'lost' && run.restarting))
          view.open[run.taskRun] = run.task;
        else delete view.open[run.taskRun];
        if (latest === undefined || latest === run.taskRun) view.tasks[run.task] = run.state;
      }
    }
    const started = event.sender === 'baton' && event.key === `workflow.${workflow.name}.running`;
    // Its first tasks start once, on its `running` event (a second one would be a bug: it starts nothing).
    const first = started && workflow.initial.every((task) => view.latest[task] === undefined);
    if (first && !execution.stopRequested) {
      for (const task of workflow.initial)
        await this.#startTask(batch, workflow, execution, task, INITIAL_RULE, event);
    }
    // A state event of a run that is no longer its task's latest (a run that a restart replaced ends late)
    // tells nothing about the task: conditions on the task's state look only at its latest run.
    const current = run !== undefined && view.latest[run.task] === run.taskRun ? run : undefined;
    if (!execution.stopRequested) {
      for (const rule of workflow.rules) {
        if (fires(rule, event, current, view)) await this.#act(batch, workflow, execution, rule, event);
      }
    }
    // Only the end of a run can leave the execution with nothing open: its other events (its own queued
    // event read after it was promoted, an operator's event before its first tasks) end nothing.
    const runEnded = run !== undefined && run.state !== 'pending' && run.state !== 'running';
    if (!runEnded || Object.keys(view.open).length > 0) return;
    if (execution.stopRequested) {
      await this.#end(batch, execution, 'stopped', undefined);
      return;
    }
    const ended = (state: string): string[] =>
      Object.keys(workflow.tasks).filter((task) => view.tasks[task] === state);
    const lost = ended('lost');
    const failed = ended('failed');
    if (lost.length > 0) await this.#end(batch, execution, 'lost', `task ${lost.join(', ')} lost`);
    else if (failed.length > 0)
      await this.#end(batch, execution, 'failed', `task ${failed.join(', ')} failed`);
    else await this.#end(batch, execution, 'succeeded', undefined);
  }

  /** Whether `taskRun` is the latest run of its task in the execution, and has not ended (or been lost). */
  #current(execution: Execution, taskRun: string): boolean {
    const { open, latest, tasks } = execution.view;
    const task = open[taskRun];
    return (
      task !== undefined &&
      latest[task] === taskRun &&
      (tasks[task] === 'pending' || tasks[task] === 'running')
    );
  }

  async #act(
    batch: Batch,
    workflow: WorkflowConfig,
    execution: Execution,
    rule: WorkflowRuleConfig,
    event: StoredEvent,
  ): Promise<void> {
    if (rule.action !== 'start') {
      const stopping = await requestStopOfTask(batch.tx, rule.task, execution.id);
      if (stopping > 0) {
        this.#log.info(
          { workflow: workflow.name, execution: execution.id, rule: rule.source, offset: event.offset },
          `stop requested for ${rule.task} in execution ${execution.id}`,
        );
      }
    }
    if (rule.action !== 'stop')
      await this.#startTask(batch, workflow, execution, rule.task, rule.index, event);
  }

  async #startTask(
    batch: Batch,
    workflow: WorkflowConfig,
    execution: Execution,
    task: string,
    rule: number,
    event: StoredEvent,
  ): Promise<void> {
    const run: TaskRun | undefined = await insertRun(batch.tx, {
      id: randomUUID(),
      task,
      rule,
      triggerOffset: event.offset,
      triggerKey: event.key,
      namespace: workflow.namespace,
      workflow: workflow.name,
      execution: execution.id,
      restartOnLost: workflow.onLost[task] === 'restart',
    });
    if (!run) return; // this event already started this task of the execution
    const { view } = execution;
    view.open[run.id] = task;
    view.latest[task] = run.id;
    view.tasks[task] = 'pending';
    batch.out.push(stateEvent(run));
  }

  async #end(
    batch: Batch,
    execution: Execution,
    state: EndedExecutionState,
    error: string | undefined,
  ): Promise<void> {
    const was = execution.state;
    execution.state = state;
    execution.error = error;
    batch.changed.add(execution);
    batch.out.push(executionEvent(execution));
    batch.ended.push({ workflow: execution.workflow, state });
    const how = error === undefined ? '' : `: ${error}`;
    this.#log.info(
      { workflow: execution.workflow, execution: execution.id, state },
      `execution ${execution.id} of ${execution.workflow} ${state}${how}`,
    );
    const workflow = this.#workflows[execution.workflow];
    if (was !== 'running' || !workflow || workflow.maxConcurrent === 0) return;
    const running = (await this.#running(batch, workflow.name)) - 1;
    batch.running.set(workflow.name, running);
    // Saved at once: the table must not show them queued to a later end in the same batch.
    await saveExecution(batch.tx, execution);
    for (const queued of await oldestQueued(batch.tx, workflow.name, workflow.maxConcurrent - running)) {
      const promoted = batch.executions.get(queued.id) ?? queued;
      promoted.state = 'running';
      await saveExecution(batch.tx, promoted);
      batch.executions.set(promoted.id, promoted);
      batch.changed.add(promoted);
      batch.running.set(workflow.name, (batch.running.get(workflow.name) ?? 0) + 1);
      batch.out.push(executionEvent(promoted));
      this.#log.info(
        { workflow: workflow.name, execution: promoted.id },
        `execution ${promoted.id} of ${workflow.name} running (was queued)`,
      );
    }
  }

  async #running(batch: Batch, workflow: string): Promise<number> {
    let running = batch.running.get(workflow);
    if (running === undefined) {
      running = await countRunning(batch.tx, workflow);
      batch.running.set(workflow, running);
    }
    return running;
  }
}

/** What an event's context says about executions: its own, a start request's id, a task run's state. */
function eventContext(event: StoredEvent): EventContext {
  let context: Record<string, unknown> = {};
  if (event.context !== null && event.context.includes('"')) {
    try {
      const parsed: unknown = JSON.parse(event.context);
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
        context = parsed as Record<string, unknown>;
      }
    } catch {
      // not JSON (stored before the log checked contexts): no execution
    }
  }
  const text = (key: string): string | undefined =>
    typeof context[key] === 'string' && context[key] !== '' ? context[key] : undefined;
  const task = text('task');
  const taskRun = text('taskRun');
  const state = context['state'];
  const run: RunStateEvent | undefined =
    event.sender === 'baton' &&
    task !== undefined &&
    taskRun !== undefined &&
    isTaskRunState(state) &&
    event.key === `task.${task}.${state}`
      ? { taskRun, task, state, restartOf: text('restartOf'), restarting: context['restarting'] === true }
      : undefined;
  return {
    execution: text('execution'),
    taskRun,
    workflow: text('workflow'),
    startExecution: text('startExecution'),
    run,
  };
}
