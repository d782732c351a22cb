// The supervisor: the node's one role gate. It starts and stops components (queue runners among them) as
// the node's role changes, and restarts failed ones with back-off. Each component has its own reconcile
// loop that moves it towards what the role asks, so role changes that come quickly never start one
// component twice at once, and one slow component never holds up another. A step-down is bounded: the
// signal aborts at once and stop() gets a hard deadline, because leader-only work that outlives the
// step-down is a split brain. Only the node's own stop drains first, within the shutdown deadline.
import type { Role } from '../cluster/types.js';
import {
  coerceError,
  describeError,
  InvalidComponentError,
  NodeStoppingError,
  SteppedDownError,
  WorkAbortedError,
} from '../errors.js';
import type { Logger } from '../log.js';
import type { Store, Tx } from '../store/store.js';
import { backoffDelay } from '../util/backoff.js';
import type { Component, ComponentContext, RunOn } from './component.js';
import { assertComponent } from './component.js';
import type { Drain, Drainable } from './drain.js';
import { startDrain } from './drain.js';
import type { Run } from './run.js';
import { abortRun, createRun, runContext, settleWithin } from './run.js';

export type ComponentState =
  'stopped' | 'starting' | 'running' | 'draining' | 'stopping' | 'failed' | 'backing-off';

export interface ComponentStatus {
  readonly name: string;
  readonly runOn: RunOn;
  readonly state: ComponentState;
  /** Starts that followed a failure. */
  readonly restarts: number;
  /** The last failure, as one line. */
  readonly lastError: string | undefined;
}

export interface RestartBackoff {
  /** Delay before the first restart; doubles per consecutive failure (with ±20 % jitter). */
  readonly initialMs: number;
  /** Longest delay between restarts. */
  readonly maxMs: number;
  /** A run that lasted this long before it failed resets the back-off to `initialMs`. */
  readonly resetAfterMs: number;
}

export const DEFAULT_RESTART_BACKOFF: RestartBackoff = {
  initialMs: 1000,
  maxMs: 32_000,
  resetAfterMs: 60_000,
};

export interface SupervisorOptions {
  readonly log: Logger;
  readonly store: Store;
  /** Inside `tx`: throws FencedError unless the group's fence is still at `term` (the node's fence check). */
  readonly assertPrimary: (tx: Tx, term: number) => Promise<void>;
  /** How long a component's stop() may take after its signal aborted; past it, it is abandoned. */
  readonly stopTimeoutMs: number;
  /**
   * When the supervisor stops (the node stops): how long components with drain() may finish the work they
   * hold before their signal aborts; the node's shutdown_timeout_ms. 0 (the default): no drain.
   */
  readonly drainTimeoutMs?: number;
  readonly backoff?: Partial<RestartBackoff>;
}

export interface SupervisorStopOptions {
  /**
   * Called once no primary-only component runs any more, while the others may still drain: the node gives
   * up its leadership there, so that another node may take over without waiting for them.
   */
  readonly afterPrimaryWork?: () => Promise<void> | void;
}

interface Entry {
  readonly component: Component;
  readonly log: Logger;
  state: ComponentState;
  restarts: number;
  /** Consecutive failures: the back-off exponent. */
  failures: number;
  restartPending: boolean;
  lastError: string | undefined;
  run: Run | undefined;
  retryAt: number | undefined;
  /** False once stop() took this component down; true while the supervisor runs. */
  enabled: boolean;
  /** The last call into the component: calls are chained, so none overlap, even abandoned ones. */
  calls: Promise<void>;
  busy: boolean;
  looping: boolean;
  dirty: boolean;
  wake: (() => void) | undefined;
}

export class Supervisor {
  readonly #log: Logger;
  readonly #store: Store;
  readonly #assertPrimary: (tx: Tx, term: number) => Promise<void>;
  readonly #stopTimeoutMs: number;
  readonly #drainTimeoutMs: number;
  readonly #backoff: RestartBackoff;
  readonly #entries = new Map<string, Entry>();
  /** Until the first setRole, primary-only components wait: acting before the role is known is unsafe. */
  #role: Role = 'secondary';
  #term = 0;
  #running = false;
  #stopping: Promise<void> | undefined;

  constructor(options: SupervisorOptions) {
    this.#log = options.log;
    this.#store = options.store;
    this.#assertPrimary = options.assertPrimary;
    this.#stopTimeoutMs = options.stopTimeoutMs;
    this.#drainTimeoutMs = options.drainTimeoutMs ?? 0;
    this.#backoff = { ...DEFAULT_RESTART_BACKOFF, ...options.backoff };
  }

  get role(): Role {
    return this.#role;
  }

  /** Registers a component; it starts at once when the supervisor runs and the role allows it. */
  add(component: Component): void {
    const checked = assertComponent(component, labelOf(component));
    if (this.#entries.has(checked.name)) {
      throw new InvalidComponentError(checked.name, 'a component with this name was already added');
    }
    const entry: Entry = {
      component: checked,
      log: this.#log.child({ component: checked.name }),
      state: 'stopped',
      restarts: 0,
      failures: 0,
      restartPending: false,
      lastError: undefined,
      run: undefined,
      retryAt: undefined,
      enabled: this.#running,
      calls: Promise.resolve(),
      busy: false,
      looping: false,
      dirty: false,
      wake: undefined,
    };
    this.#entries.set(checked.name, entry);
    this.#kick(entry);
  }

  /** Starts the components that the role allows. Idempotent; waits for a stop in progress first. */
  async start(): Promise<void> {
    if (this.#stopping) await this.#stopping;
    if (this.#running) return;
    this.#running = true;
    for (const entry of this.#entries.values()) {
      entry.enabled = true;
      this.#kick(entry);
    }
  }

  /**
   * Stops every component. First the drain: running components with drain() stop taking new work and
   * finish what they hold, all at once, until the drain deadline. Then each run's signal aborts
   * (NodeStoppingError) and its stop() is called within the stop deadline: the primary-only components
   * first, then `afterPrimaryWork`, then the others; in reverse order of adding within each. Idempotent:
   * a second call returns the first one's promise.
   */
  stop(options: SupervisorStopOptions = {}): Promise<void> {
    if (this.#stopping) return this.#stopping;
    if (!this.#running) return this.#afterPrimaryWork(options);
    this.#running = false; // no run starts from now on; the running ones go on until they are ended
    const stopping = this.#stopAll(options).finally(() => {
      this.#stopping = undefined;
    });
    this.#stopping = stopping;
    return stopping;
  }

  /**
   * Applies a role: primary-only components run while it is 'primary' or 'not-in-group', and restart
   * when the term changes. Those that must stop have their signal aborted before this returns; the
   * promise resolves when they stopped or were abandoned at the deadline. Starts go on in the background.
   */
  setRole(role: Role, term: number): Promise<void> {
    if (role !== this.#role || term !== this.#term) {
      this.#log.info({ previous: this.#role, role, term }, `supervisor: role ${role}, term ${term}`);
    }
    this.#role = role;
    this.#term = term;
    const ending: Promise<void>[] = [];
    for (const entry of this.#entries.values()) {
      const run = entry.run;
      if (run && !this.#keeps(entry, run)) {
        abortRun(run, this.#abortReason(entry, run));
        ending.push(run.ended);
      }
      this.#kick(entry);
    }
    return Promise.all(ending).then(() => undefined);
  }

  status(): ComponentStatus[] {
    return [...this.#entries.values()].map((entry) => ({
      name: entry.component.name,
      runOn: entry.component.runOn,
      state: entry.state,
      restarts: entry.restarts,
      lastError: entry.lastError,
    }));
  }

  async #stopAll(options: SupervisorStopOptions): Promise<void> {
    const entries = [...this.#entries.values()].reverse();
    const drain = this.#drain(entries);
    const end = async (entry: Entry): Promise<void> => {
      await drain.over(entry);
      entry.enabled = false;
      const run = entry.run;
      if (run) abortRun(run, new NodeStoppingError('the node is stopping'));
      this.#kick(entry);
      if (run) await run.ended;
    };
    try {
      for (const entry of entries) if (entry.component.runOn === 'primary') await end(entry);
      await this.#afterPrimaryWork(options);
      for (const entry of entries) if (entry.component.runOn !== 'primary') await end(entry);
    } finally {
      drain.close();
    }
  }

  /** Starts the drain of the running components that have drain(), unless there is no drain deadline. */
  #drain(entries: readonly Entry[]): Drain<Entry> {
    const items = new Map<Entry, Drainable>();
    for (const entry of this.#drainTimeoutMs > 0 ? entries : []) {
      const run = entry.run;
      if (!run || run.controller.signal.aborted || !entry.component.drain) continue;
      items.set(entry, {
        name: entry.component.name,
        aborted: run.aborted,
        // Chained after a start() that may still be pending: calls never overlap.
        drain: () =>
          this.#call(entry, () => {
            if (run.controller.signal.aborted) return;
            this.#setState(entry, 'draining');
            return entry.component.drain?.();
          }),
      });
    }
    return startDrain(items, this.#drainTimeoutMs, this.#log);
  }

  async #afterPrimaryWork(options: SupervisorStopOptions): Promise<void> {
    try {
      await options.afterPrimaryWork?.();
    } catch (error) {
      this.#log.error({ err: describeError(error) }, 'supervisor: afterPrimaryWork failed');
    }
  }

  /** What the work of a run that must end is told: why it ends. */
  #abortReason(entry: Entry, run: Run): WorkAbortedError {
    if (!entry.enabled) return new NodeStoppingError('the node is stopping');
    if (!this.#roleAllows(entry)) return new SteppedDownError(`the node is ${this.#role}: no longer primary`);
    if (run.term !== this.#term) {
      return new SteppedDownError(`term ${this.#term} began: the run of term ${run.term} is over`);
    }
    return new WorkAbortedError(`component ${entry.component.name} is restarting`);
  }

  #roleAllows(entry: Entry): boolean {
    return entry.component.runOn === 'any' || this.#role !== 'secondary';
  }

  #keeps(entry: Entry, run: Run): boolean {
    if (run.controller.signal.aborted || !entry.enabled || !this.#roleAllows(entry)) return false;
    // A primary-only run acts for the term it started under: a new term needs a new run.
    return entry.component.runOn === 'any' || run.term === this.#term;
  }

  /** Wakes the entry's reconcile loop, starting one when none runs. */
  #kick(entry: Entry): void {
    entry.dirty = true;
    entry.wake?.();
    if (entry.looping) return;
    entry.looping = true;
    this.#reconcile(entry).catch((error: unknown) => {
      entry.looping = false;
      entry.log.error(
        { err: describeError(error) },
        `supervisor: bug in the loop of ${entry.component.name}`,
      );
    });
  }

  async #reconcile(entry: Entry): Promise<void> {
    for (;;) {
      entry.dirty = false;
      const run = entry.run;
      if (run) {
        if (this.#keeps(entry, run)) await this.#nextWake(entry);
        else await this.#endRun(entry, run);
        continue;
      }
      if (!this.#running || !entry.enabled || !this.#roleAllows(entry)) {
        this.#setState(entry, 'stopped');
        entry.looping = false; // set before returning, so a kick from now on starts a new loop
        return;
      }
      if (entry.busy) {
        // A call abandoned at its deadline is still pending: calls never overlap, so wait for it to end.
        await this.#nextWake(entry);
        continue;
      }
      const wait = (entry.retryAt ?? 0) - Date.now();
      if (wait > 0) {
        this.#setState(entry, 'backing-off');
        await this.#nextWake(entry, wait);
        continue;
      }
      entry.retryAt = undefined;
      await this.#startRun(entry);
    }
  }

  async #startRun(entry: Entry): Promise<void> {
    const run = createRun(this.#term);
    entry.run = run;
    if (entry.restartPending) {
      entry.restartPending = false;
      entry.restarts += 1;
    }
    this.#setState(entry, 'starting');
    const ctx = this.#context(entry, run);
    const call = this.#call(entry, () => entry.component.start(ctx));
    let failure: { error: unknown } | undefined;
    await Promise.race([
      call.catch((error: unknown) => {
        failure = { error };
      }),
      run.aborted,
    ]);
    // Aborted meanwhile (role change, stop, or ctx.fail): the loop ends the run once start() settles.
    if (run.controller.signal.aborted) return;
    if (failure) this.#fail(entry, run, failure.error);
    else if (entry.state === 'starting') this.#setState(entry, 'running'); // not when a drain began meanwhile
  }

  /** Aborts the run, calls stop() within the deadline, and schedules a restart when the run failed. */
  async #endRun(entry: Entry, run: Run): Promise<void> {
    abortRun(run, this.#abortReason(entry, run));
    const name = entry.component.name;
    const failure = run.failure;
    if (failure) {
      if (Date.now() - run.startedAt >= this.#backoff.resetAfterMs) entry.failures = 0;
      entry.failures += 1;
      const delay = backoffDelay(entry.failures, this.#backoff);
      entry.retryAt = Date.now() + delay;
      entry.restartPending = true;
      entry.log.error(
        { err: describeError(failure), restartInMs: delay, failures: entry.failures },
        `component ${name} failed; restarting in ${delay} ms`,
      );
      this.#setState(entry, 'failed');
    } else {
      this.#setState(entry, 'stopping');
    }
    const deadline = (run.abortedAt ?? Date.now()) + this.#stopTimeoutMs;
    // Chained after a start() that may still be pending: stop() never runs beside it.
    const outcome = await settleWithin(
      this.#call(entry, () => entry.component.stop()),
      deadline - Date.now(),
    );
    if (outcome.kind === 'timeout') {
      entry.log.error(
        { stopTimeoutMs: this.#stopTimeoutMs },
        `component ${name} did not stop within ${this.#stopTimeoutMs} ms; abandoned as stopped (its signal is aborted; it starts again only once that call ends)`,
      );
    } else if (outcome.kind === 'rejected') {
      entry.log.warn({ err: describeError(outcome.error) }, `component ${name}: stop() failed`);
    }
    entry.run = undefined;
    if (!failure) this.#setState(entry, 'stopped');
    run.end();
  }

  /** A failure of a live run: abort it and let the loop stop and restart it. */
  #fail(entry: Entry, run: Run, error: unknown): void {
    if (run.controller.signal.aborted || entry.run !== run) return;
    run.failure = coerceError(error);
    entry.lastError = describeError(error);
    abortRun(run, new WorkAbortedError(`component ${entry.component.name} failed: ${entry.lastError}`));
    this.#kick(entry);
  }

  /** Runs a call into the component after the previous one settled; `busy` while any is pending. */
  #call(entry: Entry, fn: () => Promise<void> | void): Promise<void> {
    const call = entry.calls.then(fn);
    const settled = call.then(
      () => undefined,
      () => undefined,
    );
    entry.calls = settled;
    entry.busy = true;
    void settled.then(() => {
      if (entry.calls !== settled) return;
      entry.busy = false;
      this.#kick(entry);
    });
    return call;
  }

  /** Waits for a kick (or `ms`), unless one came since the loop last looked. */
  #nextWake(entry: Entry, ms?: number): Promise<void> {
    if (entry.dirty) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(() => done(), ms);
      const done = (): void => {
        clearTimeout(timer);
        entry.wake = undefined;
        resolve();
      };
      entry.wake = done;
    });
  }

  #setState(entry: Entry, state: ComponentState): void {
    if (entry.state === state) return;
    const previous = entry.state;
    entry.state = state;
    entry.log.info({ previous, state }, `component ${entry.component.name}: ${state}`);
  }

  #context(entry: Entry, run: Run): ComponentContext {
    return runContext(run, {
      component: entry.component,
      log: entry.log,
      store: this.#store,
      fail: (error: unknown) => this.#fail(entry, run, error),
      assertPrimary: this.#assertPrimary,
      current: () => ({ role: this.#role, term: this.#term }),
    });
  }
}

function labelOf(value: unknown): string {
  if (typeof value === 'object' && value !== null && 'name' in value && typeof value.name === 'string') {
    return value.name;
  }
  return '(unnamed)';
}
