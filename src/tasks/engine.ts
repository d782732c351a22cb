// The rule engine: a primary-only component that follows the event log and starts, stops and restarts
// task runs as the rules say. Its listener offset commits in the same fenced transaction as the effects of
// the events it covers (runs inserted, stop requests recorded, state events appended), so a failover
// neither loses nor repeats an action. It acts only on what committed: a run becomes `running` in a
// committed, fenced transaction before its process is spawned, so a crash in between loses the run (the
// next primary marks it `lost`) instead of running it twice.
import { randomUUID } from 'node:crypto';

import type { Component, ComponentContext } from '../components/component.js';
import type { RuleConfig, TaskConfig, WorkflowConfig } from '../config/types.js';
import { describeError, FencedError } from '../errors.js';
import type { EventLog } from '../events/log.js';
import { ALL_NAMESPACES } from '../events/log.js';
import type { AppendedEvent, StoredEvent } from '../events/types.js';
import type { Logger } from '../log.js';
import type { Store, Tx } from '../store/store.js';
import { backoffDelay, retrying } from '../util/backoff.js';
import { sleep } from '../util/sleep.js';
import type { RunningTask, TaskOutcome } from './process.js';
import { launchTask } from './process.js';
import { executionsToStop } from './executions.js';
import { matchRules } from './rules.js';
import type { TaskRun } from './runs.js';
import {
  endRun,
  insertRun,
  markLost,
  markRunning,
  pendingRuns,
  requestStopOfTask,
  runsToStop,
  setPid,
  stateEvent,
  takeRestarts,
} from './runs.js';
import type { EndedExecution, WorkflowEffects } from './workflows.js';
import { Workflows } from './workflows.js';

const NO_EFFECTS: WorkflowEffects = { events: [], ended: [] };

/** The listener name under which the rule engine keeps its offset (for every namespace). */
export const RULES_LISTENER = 'baton.rules';
/** Events read and applied per transaction, at most. */
const BATCH_SIZE = 500;
/** How often the engine looks for stop requests and pending runs when no event arrives. */
const POLL_MS = 1_000;
const RETRY = { initialMs: 1_000, maxMs: 32_000 };
const LOST_ERROR = 'its node stopped, crashed or stepped down before the run ended';

export interface RuleEngineOptions {
  /** This node's name, recorded in the runs it starts. */
  readonly node: string;
  readonly tasks: Readonly<Record<string, TaskConfig>>;
  readonly rules: readonly RuleConfig[];
  /** Workflows, whose executions this engine starts and follows. */
  readonly workflows?: Readonly<Record<string, WorkflowConfig>> | undefined;
  readonly events: EventLog;
  readonly store: Store;
  readonly log: Logger;
  /** The node's HTTP address (BATON_URL of command tasks). */
  readonly url: () => string | undefined;
  /**
   * Inside `tx`: throws FencedError unless the group's fence is still at `term`. Used once the engine's
   * run is ending (when ctx.assertPrimary refuses everything) to record what became of its runs.
   */
  readonly fence: (tx: Tx, term: number) => Promise<void>;
  /** Between SIGTERM and SIGKILL when a run is stopped. */
  readonly graceMs: number;
  /** Told of each execution this engine ended, once its transaction committed. */
  readonly onExecutionEnded?: ((workflow: string, state: string) => void) | undefined;
}

interface Launched {
  readonly run: TaskRun;
  readonly handle: RunningTask;
  /** Set when the run ended on its own (or by a stop request or timeout), before the engine stopped. */
  outcome: TaskOutcome | undefined;
  stopRequested: boolean;
}

export class RuleEngine implements Component {
  readonly name = 'baton.rules';
  readonly runOn = 'primary' as const;
  readonly #options: RuleEngineOptions;
  readonly #log: Logger;
  readonly #restartRules: readonly number[];
  readonly #workflows: Workflows;
  #ctx: ComponentContext | undefined;
  #work: Promise<void> | undefined;
  #launched = new Map<string, Launched>();
  readonly #finishing = new Set<Promise<void>>();
  #wake: (() => void) | undefined;
  #nudged = false;

  constructor(options: RuleEngineOptions) {
    this.#options = options;
    this.#log = options.log.child({ part: 'rules' });
    this.#restartRules = options.rules.filter((rule) => rule.onLost === 'restart').map((rule) => rule.index);
    this.#workflows = new Workflows(options.workflows ?? {}, options.node, options.log);
  }

  /**
   * Gives the engine its listener offset the first time rules run on this store: the log's head, so that
   * events sent before rules existed start nothing. Call before the node accepts events.
   */
  async prepare(): Promise<void> {
    await this.#options.events.initListenerOffset(ALL_NAMESPACES, RULES_LISTENER);
  }

  /** Looks for stop requests and pending runs now rather than at the next poll. */
  wake(): void {
    this.#nudged = true;
    this.#wake?.();
  }

  start(ctx: ComponentContext): void {
    this.#ctx = ctx;
    this.#launched = new Map();
    this.#work = this.#loop(ctx).catch((error: unknown) => {
      if (!ctx.signal.aborted) ctx.fail(error);
    });
  }

  /**
   * Ends the runs of this node (their node is stopping or stepped down) and, while the fence still allows,
   * records them as lost; else the next primary does.
   */
  async stop(): Promise<void> {
    const ctx = this.#ctx;
    await this.#work;
    if (!ctx) return;
    const launched = [...this.#launched.values()];
    for (const entry of launched) entry.handle.stop('node');
    const outcomes = await Promise.all(launched.map((entry) => entry.handle.done));
    await Promise.all([...this.#finishing]);
    const left = launched.filter((entry) => this.#launched.has(entry.run.id));
    if (left.length === 0) return;
    try {
      await this.#options.events.transaction(async (tx, append) => {
        await this.#options.fence(tx, ctx.term);
        const ended: TaskRun[] = [];
        for (const entry of left) {
          const outcome = entry.outcome ?? outcomes[launched.indexOf(entry)];
          // A run that ended by itself before the stop keeps its outcome; the others are lost.
          const run =
            entry.outcome !== undefined && outcome !== undefined
              ? await endRun(tx, entry.run.id, ['running'], outcome)
              : (await markLost(tx, [entry.run.id], this.#restartRules, LOST_ERROR))[0];
          if (run) ended.push(run);
        }
        if (ended.length > 0) await append(ended.map(stateEvent));
      });
      for (const entry of left) this.#launched.delete(entry.run.id);
    } catch (error) {
      this.#log.info(
        { err: describeError(error), runs: left.map((entry) => entry.run.id) },
        'could not record the runs this node ended; the next primary marks them lost',
      );
    }
  }

  async #loop(ctx: ComponentContext): Promise<void> {
    await this.#retrying(ctx, 'take over the task runs', () => this.#takeOver(ctx));
    let after = await this.#retrying(
      ctx,
      'read the rules offset',
      async () => (await this.#options.events.listenerOffset(ALL_NAMESPACES, RULES_LISTENER)) ?? 0,
    );
    let failures = 0;
    while (!ctx.signal.aborted) {
      try {
        const events = await this.#options.events.list({ after, limit: BATCH_SIZE });
        const last = events.at(-1);
        if (last) {
          await this.#apply(ctx, events, last.offset);
          after = last.offset;
        }
        await this.#reconcile(ctx);
        failures = 0;
        if (events.length === BATCH_SIZE) continue;
        await this.#idle(after, ctx.signal);
      } catch (error) {
        if (ctx.signal.aborted || error instanceof FencedError) throw error;
        failures += 1;
        const delay = backoffDelay(failures, RETRY);
        this.#log.warn(
          { err: describeError(error), retryInMs: delay },
          `rule engine: ${describeError(error)}; retrying`,
        );
        await sleep(delay, ctx.signal);
      }
    }
  }

  /**
   * Runs that were running when this node took over have lost their node: mark them lost, and restart
   * those whose rule says on_lost = "restart" (each lost run once).
   */
  async #takeOver(ctx: ComponentContext): Promise<void> {
    await this.#options.events.transaction(async (tx, append) => {
      await ctx.assertPrimary(tx);
      const lost = await markLost(tx, undefined, this.#restartRules, LOST_ERROR);
      const restarted: TaskRun[] = [];
      for (const old of await takeRestarts(tx)) {
        const run = await insertRun(tx, {
          id: randomUUID(),
          task: old.task,
          rule: old.rule,
          triggerOffset: old.triggerOffset,
          triggerKey: old.triggerKey,
          namespace: this.#taskConfig(old)?.namespace ?? old.namespace,
          attempt: old.attempt + 1,
          restartOf: old.id,
          workflow: old.workflow,
          execution: old.execution,
          restartOnLost: old.restartOnLost,
        });
        if (run) restarted.push(run);
      }
      for (const run of lost) this.#log.warn({ taskRun: run.id, task: run.task }, `task run ${run.id} lost`);
      for (const run of restarted) {
        this.#log.info({ taskRun: run.id, restartOf: run.restartOf }, `restarting lost run of ${run.task}`);
      }
      if (lost.length + restarted.length > 0) await append([...lost, ...restarted].map(stateEvent));
    });
  }

  /** One batch of events: its effects and the offset after it, in one fenced transaction. */
  async #apply(ctx: ComponentContext, events: readonly StoredEvent[], last: number): Promise<void> {
    const matches = matchRules(this.#options.rules, events);
    let effects: WorkflowEffects = NO_EFFECTS;
    await this.#options.events.transaction(async (tx, append) => {
      await ctx.assertPrimary(tx);
      const created: TaskRun[] = [];
      for (const { rule, event } of matches) {
        if (rule.action !== 'start') {
          const stopping = await requestStopOfTask(tx, rule.task, undefined);
          if (stopping > 0) {
            this.#log.info({ rule: rule.index, offset: event.offset }, `stop requested for ${rule.task}`);
          }
        }
        if (rule.action === 'stop') continue;
        const run = await insertRun(tx, {
          id: randomUUID(),
          task: rule.task,
          rule: rule.index,
          triggerOffset: event.offset,
          triggerKey: event.key,
          namespace: this.#options.tasks[rule.task]?.namespace ?? event.namespace,
        });
        if (run) created.push(run);
      }
      effects = this.#workflows.configured ? await this.#workflows.apply(tx, ctx.term, events) : NO_EFFECTS;
      if (created.length + effects.events.length > 0)
        await append([...created.map(stateEvent), ...effects.events]);
      await this.#options.events.commitListenerOffset(ALL_NAMESPACES, RULES_LISTENER, last, tx);
    });
    this.#told(effects.ended);
  }

  /** Carries out stop requests, and starts the pending runs (after their `running` state committed). */
  async #reconcile(ctx: ComponentContext): Promise<void> {
    const { store, events } = this.#options;
    if (this.#workflows.configured) {
      const requested = await executionsToStop(store);
      if (requested.length > 0) {
        const stopped = await events.transaction(async (tx, append) => {
          await ctx.assertPrimary(tx);
          const done = await this.#workflows.stop(tx, ctx.term, requested);
          if (done.events.length > 0) await append(done.events);
          return done;
        });
        this.#told(stopped.ended);
      }
    }
    for (const run of await runsToStop(store)) {
      const entry = this.#launched.get(run.id);
      if (!entry || entry.stopRequested) continue;
      entry.stopRequested = true;
      this.#log.info({ taskRun: run.id }, `stopping task run ${run.id} of ${run.task}`);
      entry.handle.stop('stopped');
    }
    const pending = await pendingRuns(store);
    if (pending.length === 0) return;
    const starting: TaskRun[] = [];
    await events.transaction(async (tx, append) => {
      await ctx.assertPrimary(tx);
      const changed: TaskRun[] = [];
      starting.length = 0;
      for (const run of pending) {
        let changedRun: TaskRun | undefined;
        if (run.stopRequested) {
          changedRun = await endRun(tx, run.id, ['pending'], { state: 'stopped' });
        } else if (this.#taskConfig(run) === undefined) {
          const what =
            run.workflow === undefined
              ? `task "${run.task}"`
              : `task "${run.task}" of workflow "${run.workflow}"`;
          changedRun = await endRun(tx, run.id, ['pending'], {
            state: 'failed',
            error: `${what} is not configured on node ${this.#options.node}`,
          });
        } else {
          changedRun = await markRunning(tx, run.id, this.#options.node, ctx.term);
          if (changedRun) starting.push(changedRun);
        }
        if (changedRun) changed.push(changedRun);
      }
      if (changed.length > 0) await append(changed.map(stateEvent));
    });
    for (const run of starting) this.#launch(ctx, run);
  }

  #launch(ctx: ComponentContext, run: TaskRun): void {
    const task = this.#taskConfig(run) as TaskConfig;
    const log = this.#log.child({
      task: run.task,
      taskRun: run.id,
      ...(run.execution !== undefined ? { workflow: run.workflow, execution: run.execution } : {}),
    });
    const where = run.execution === undefined ? '' : ` in execution ${run.execution} of ${run.workflow}`;
    log.info(
      `task run ${run.id} of ${run.task} started${where} (event ${run.triggerOffset} ${run.triggerKey})`,
    );
    const handle = launchTask({
      runId: run.id,
      task,
      workflow: run.workflow,
      execution: run.execution,
      log,
      url: this.#options.url(),
      graceMs: this.#options.graceMs,
      sendEvent: (key, value) => this.#sendEvent(run, task, key, value),
    });
    const entry: Launched = { run, handle, outcome: undefined, stopRequested: false };
    this.#launched.set(run.id, entry);
    if (handle.pid !== undefined) {
      setPid(this.#options.store, run.id, handle.pid).catch(() => undefined);
    }
    void handle.done.then((outcome) => {
      // Ended by the engine's own stop: stop() records it.
      if (ctx.signal.aborted) return;
      entry.outcome = outcome;
      const finishing = this.#finish(ctx, entry, outcome).finally(() => this.#finishing.delete(finishing));
      this.#finishing.add(finishing);
    });
  }

  /** Records how a run ended, retrying until it commits or this node's term is over. */
  async #finish(ctx: ComponentContext, entry: Launched, outcome: TaskOutcome): Promise<void> {
    const { run } = entry;
    const log = this.#log.child({ task: run.task, taskRun: run.id });
    for (let attempt = 1; !ctx.signal.aborted; attempt++) {
      try {
        await this.#options.events.transaction(async (tx, append) => {
          await ctx.assertPrimary(tx);
          const ended = await endRun(tx, run.id, ['running'], outcome);
          if (ended) await append([stateEvent(ended)]);
        });
        this.#launched.delete(run.id);
        const how = outcome.error ? `: ${outcome.error}` : '';
        log.info(
          { state: outcome.state, exitCode: outcome.exitCode },
          `task run ${run.id} ${outcome.state}${how}`,
        );
        return;
      } catch (error) {
        if (error instanceof FencedError) return;
        const delay = backoffDelay(attempt, RETRY);
        log.warn({ err: describeError(error), retryInMs: delay }, 'could not record the end of a task run');
        await sleep(delay, ctx.signal);
      }
    }
  }

  #sendEvent(
    run: TaskRun,
    task: TaskConfig,
    key: string,
    value: string | null | undefined,
  ): Promise<AppendedEvent> {
    return this.#options.events
      .append([
        {
          namespace: task.namespace,
          key,
          value: value ?? null,
          sender: `task.${task.name}`,
          context: JSON.stringify(
            run.execution === undefined ? { taskRun: run.id } : { taskRun: run.id, execution: run.execution },
          ),
        },
      ])
      .then((appended) => appended[0] as AppendedEvent);
  }

  /** Tells onExecutionEnded of the executions a committed transaction ended. */
  #told(ended: readonly EndedExecution[]): void {
    for (const { workflow, state } of ended) this.#options.onExecutionEnded?.(workflow, state);
  }

  /** The config of a run's task: a [tasks.<name>] table, or a task of its workflow. */
  #taskConfig(run: TaskRun): TaskConfig | undefined {
    return run.workflow === undefined
      ? this.#options.tasks[run.task]
      : this.#workflows.task(run.workflow, run.task);
  }

  /** Waits for a newer event, a wake(), the poll interval, or the end of the run. */
  async #idle(after: number, signal: AbortSignal): Promise<void> {
    if (!this.#nudged) {
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        void this.#options.events.waitBeyond(after, { timeoutMs: POLL_MS, signal }).then(resolve);
      });
    }
    this.#wake = undefined;
    this.#nudged = false;
  }

  /** Runs `fn` until it succeeds, backing off after failures; a FencedError or the end of the run ends it. */
  #retrying<T>(ctx: ComponentContext, what: string, fn: () => Promise<T>): Promise<T> {
    return retrying(fn, {
      backoff: RETRY,
      signal: ctx.signal,
      final: (error) => error instanceof FencedError,
      onRetry: (error, delay) =>
        this.#log.warn(
          { err: describeError(error), retryInMs: delay },
          `rule engine: could not ${what}; retrying`,
        ),
    });
  }
}
