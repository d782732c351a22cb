// The scheduler: a primary-only component that applies the ticks of the configured schedules. Each tick is
// applied in ONE fenced transaction: the fence checked at this run's term, the tick row inserted keyed by
// (schedule, tick time) (found there already: it was applied, nothing happens), the effect (a store queue's
// record, an event, a task run) and the event schedule.<name>.fired. So a tick is applied at most once
// whatever crashes, and never by a deposed primary. When it takes over, a primary decides the ticks that fell
// since the last decided one by the schedule's `missed` policy. Timers are set from the schedule and the wall
// clock, never from the last firing, so they do not drift.
import { randomUUID } from 'node:crypto';

import type { Component, ComponentContext } from '../components/component.js';
import type { ScheduleConfig, TaskConfig } from '../config/types.js';
import { describeError, FencedError, InternalError, NotFoundError, NotRunningError } from '../errors.js';
import type { AppendInTx, EventLog } from '../events/log.js';
import type { EventInput } from '../events/types.js';
import type { Logger } from '../log.js';
import { enqueueIn } from '../queue/enqueue-in.js';
import type { Store, Tx } from '../store/store.js';
import { insertRun, stateEvent } from '../tasks/runs.js';
import { retrying } from '../util/backoff.js';
import { sleep } from '../util/sleep.js';
import type { RedisTickPush } from './redis-push.js';
import type { TickCause } from './ticks.js';
import { advanceState, insertTick, lockState, markPushed, unpushedTicks } from './ticks.js';
import type { Timing } from './timing.js';
import { timingOf } from './timing.js';

const RETRY = { initialMs: 200, maxMs: 5_000 };
/** The longest single timer of a schedule waiting for its next tick. */
const MAX_SLEEP_MS = 60_000;
/** The rule index recorded in the task runs that a schedule starts (no [[rules]] entry started them). */
export const SCHEDULE_RULE = -1;

export interface SchedulerOptions {
  readonly schedules: Readonly<Record<string, ScheduleConfig>>;
  readonly tasks: Readonly<Record<string, TaskConfig>>;
  /** This node's name, recorded in the tick rows. */
  readonly node: string;
  readonly events: EventLog;
  readonly store: Store;
  readonly log: Logger;
  /** Pushes the records of ticks whose schedule publishes to a Redis queue (needed when one does). */
  readonly redis?: Pick<RedisTickPush, 'push'>;
  /** After a tick's record committed: wakes this process's consumers of `queue`. */
  readonly wakeQueue?: (queue: string) => void;
  /** After a tick's task run committed: the rule engine starts pending runs. */
  readonly wakeTasks?: () => void;
  /** Told of each tick applied (metrics). */
  readonly onTick?: (schedule: string, latenessMs: number, cause: TickCause) => void;
  /** Told of ticks a catch-up counted as missed (metrics). */
  readonly onMissed?: (schedule: string, count: number) => void;
  /** [0, 1): the jitter's draw; Math.random by default. */
  readonly random?: () => number;
  /** The wall clock, ms since 1970; Date.now by default. */
  readonly now?: () => number;
}

/** What one applied tick did. */
export interface AppliedTick {
  readonly schedule: string;
  readonly tick: number;
  readonly term: number;
  /** False when the tick had been applied already (its row existed): nothing was done. */
  readonly applied: boolean;
}

export class Scheduler implements Component {
  readonly name = 'baton.schedules';
  readonly runOn = 'primary' as const;
  readonly #options: SchedulerOptions;
  readonly #log: Logger;
  readonly #timings: ReadonlyMap<string, Timing>;
  readonly #now: () => number;
  #ctx: ComponentContext | undefined;
  #work: Promise<unknown> | undefined;

  constructor(options: SchedulerOptions) {
    this.#options = options;
    this.#log = options.log.child({ part: 'schedules' });
    this.#timings = new Map(
      Object.values(options.schedules).map((schedule) => [schedule.name, timingOf(schedule.timing)]),
    );
    this.#now = options.now ?? Date.now;
  }

  start(ctx: ComponentContext): void {
    this.#ctx = ctx;
    this.#work = Promise.all(
      Object.values(this.#options.schedules).map((schedule) =>
        this.#run(ctx, schedule).catch((error: unknown) => {
          if (!ctx.signal.aborted && !(error instanceof FencedError)) ctx.fail(error);
        }),
      ),
    );
  }

  async stop(): Promise<void> {
    await this.#work;
    this.#ctx = undefined;
  }

  /**
   * Applies one tick of `schedule` now (`baton schedules fire`), at the current time, recorded like any
   * tick. NotRunningError when the scheduler does not run here (not the primary); FencedError when this
   * node's term ended meanwhile.
   */
  async fire(schedule: string): Promise<AppliedTick> {
    const config = this.#options.schedules[schedule];
    const ctx = this.#ctx;
    if (!config) throw new NotFoundError(`unknown schedule "${schedule}"`);
    if (!ctx || ctx.signal.aborted) {
      throw new NotRunningError('the schedules do not run on this node now: ask the primary');
    }
    return this.#apply(ctx, config, this.#now(), 'manual');
  }

  /** One schedule for one run of the component: the catch-up, then each tick as it comes. */
  async #run(ctx: ComponentContext, schedule: ScheduleConfig): Promise<void> {
    const timing = this.#timings.get(schedule.name) as Timing;
    const log = this.#log.child({ schedule: schedule.name });
    let after = await this.#retrying(ctx, log, 'catch up', () => this.#catchUp(ctx, schedule, timing));
    const random = this.#options.random ?? Math.random;
    while (!ctx.signal.aborted) {
      const tick = timing.next(after);
      if (tick === undefined) {
        log.info(`schedule ${schedule.name} never fires again`);
        return;
      }
      const jitter = schedule.jitterMs > 0 ? Math.floor(random() * schedule.jitterMs) : 0;
      await this.#until(tick + jitter, ctx.signal);
      if (ctx.signal.aborted) return;
      await this.#retrying(ctx, log, 'apply a tick', () => this.#apply(ctx, schedule, tick, 'on-time'));
      after = tick;
    }
  }

  /**
   * On taking over: the ticks after the last decided one up to now, by the schedule's `missed` policy; the
   * older ones are counted as missed. Returns the time from which the timer goes on.
   */
  async #catchUp(ctx: ComponentContext, schedule: ScheduleConfig, timing: Timing): Promise<number> {
    // Records of Redis ticks that committed but whose push was not confirmed (their primary went away).
    if (schedule.action.kind === 'publish' && schedule.action.backend === 'redis') {
      for (const left of await unpushedTicks(this.#options.store, schedule.name)) {
        await this.#push(ctx, schedule, left.tick, left.term);
      }
    }
    const now = this.#now();
    const keep = schedule.missed === 'all' ? schedule.missedLimit : schedule.missed === 'last' ? 1 : 0;
    const decided = await this.#options.store.transaction(async (tx) => {
      await ctx.assertPrimary(tx);
      const state = await lockState(tx, schedule.name);
      if (!state) {
        // A schedule seen for the first time starts now: nothing before it was missed.
        await advanceState(tx, schedule.name, now);
        return { from: now, kept: [] as number[], older: 0, capped: false };
      }
      const { kept, older, capped } = timing.between(state.coveredUntil, now, keep);
      // Covered up to just before the first tick to apply (every one of them advances it), or up to now.
      const first = kept[0];
      await advanceState(tx, schedule.name, first === undefined ? now : first - 1, older);
      return { from: Math.max(state.coveredUntil, now), kept, older, capped };
    });
    if (decided.older > 0) {
      this.#log.warn(
        { schedule: schedule.name, missed: decided.older, policy: schedule.missed },
        `schedule ${schedule.name}: ${decided.older}${decided.capped ? ' or more' : ''} ticks missed ` +
          `while no primary acted (missed = "${schedule.missed}")`,
      );
      this.#options.onMissed?.(schedule.name, decided.older);
    }
    for (const tick of decided.kept) {
      if (ctx.signal.aborted) break;
      await this.#apply(ctx, schedule, tick, 'catch-up');
    }
    return decided.from;
  }

  /** Applies one tick in one fenced transaction; nothing when its row exists already. */
  async #apply(
    ctx: ComponentContext,
    schedule: ScheduleConfig,
    tick: number,
    cause: TickCause,
  ): Promise<AppliedTick> {
    const { events, store } = this.#options;
    const latenessMs = this.#now() - tick;
    const { action } = schedule;
    const toRedis = action.kind === 'publish' && action.backend === 'redis';
    const applied = await events.transaction(async (tx, append) => {
      await ctx.assertPrimary(tx);
      const inserted = await insertTick(
        tx,
        {
          schedule: schedule.name,
          tick,
          term: ctx.term,
          node: this.#options.node,
          latenessMs,
          cause,
        },
        { pushed: !toRedis },
      );
      if (!inserted) return false;
      if (cause !== 'manual') await advanceState(tx, schedule.name, tick);
      const time = new Date(tick).toISOString();
      const context = JSON.stringify({
        schedule: schedule.name,
        tick: time,
        term: ctx.term,
        node: this.#options.node,
        cause,
      });
      const [fired] = await append([
        {
          namespace: schedule.namespace,
          key: `schedule.${schedule.name}.fired`,
          value: time,
          sender: 'baton',
          context,
        },
      ]);
      if (action.kind === 'publish') {
        // A Redis queue's record is pushed once this commits (#push).
        if (!toRedis) await enqueueIn(tx, store, action.queue, [this.#record(schedule, tick, ctx.term)]);
      } else if (action.kind === 'event') {
        const event: EventInput = {
          namespace: action.namespace,
          key: action.key,
          value: action.value ?? time,
          sender: `schedule.${schedule.name}`,
          context,
        };
        await append([event]);
      } else if (fired) {
        await this.#startTask(tx, append, action.task, fired.offset, fired.key);
      }
      return true;
    });
    if (applied && toRedis) await this.#push(ctx, schedule, tick, ctx.term);
    if (applied) {
      this.#options.onTick?.(schedule.name, latenessMs, cause);
      if (action.kind === 'publish') this.#options.wakeQueue?.(action.queue);
      if (action.kind === 'task') this.#options.wakeTasks?.();
    }
    return { schedule: schedule.name, tick, term: ctx.term, applied };
  }

  /** The record a publish action enqueues for a tick applied under `term`. */
  #record(schedule: ScheduleConfig, tick: number, term: number): Buffer {
    const payload = schedule.action.kind === 'publish' ? schedule.action.payload : undefined;
    return Buffer.from(
      fillPayload(payload, { schedule: schedule.name, tick: new Date(tick).toISOString(), term }),
    );
  }

  /**
   * Pushes the record of a committed tick to its Redis queue (at most once whoever pushes it: see
   * redis-push.ts), retrying until it is done or this run ends (the next primary then pushes it), and
   * records it as pushed.
   */
  async #push(ctx: ComponentContext, schedule: ScheduleConfig, tick: number, term: number): Promise<void> {
    const { action } = schedule;
    const redis = this.#options.redis;
    if (action.kind !== 'publish' || !redis) {
      throw new InternalError(
        `schedule ${schedule.name} publishes to no Redis queue, or no Redis connection was given`,
      );
    }
    const log = this.#log.child({ schedule: schedule.name });
    await this.#retrying(ctx, log, 'push a record to Redis', async () => {
      await redis.push(action.key, this.#record(schedule, tick, term), schedule.name, tick);
      await markPushed(this.#options.store, schedule.name, tick);
    });
  }

  async #startTask(tx: Tx, append: AppendInTx, task: string, offset: number, key: string): Promise<void> {
    const run = await insertRun(tx, {
      id: randomUUID(),
      task,
      rule: SCHEDULE_RULE,
      triggerOffset: offset,
      triggerKey: key,
      namespace: this.#options.tasks[task]?.namespace ?? 'default',
    });
    if (run) await append([stateEvent(run)]);
  }

  /**
   * Resolves at `atMs` on the wall clock (never before it), or when `signal` aborts. It looks at the clock
   * again at least every minute: a timer longer than 2^31 ms fires at once, and a clock that was stepped
   * (NTP) moves the wall-clock time the timer stands for.
   */
  async #until(atMs: number, signal: AbortSignal): Promise<void> {
    for (let left = atMs - this.#now(); left > 0 && !signal.aborted; left = atMs - this.#now()) {
      await sleep(Math.min(left, MAX_SLEEP_MS), signal);
    }
  }

  /** Runs `fn` until it succeeds, backing off after failures; a FencedError or the end of the run ends it. */
  #retrying<T>(ctx: ComponentContext, log: Logger, what: string, fn: () => Promise<T>): Promise<T> {
    return retrying(fn, {
      backoff: RETRY,
      signal: ctx.signal,
      final: (error) => error instanceof FencedError,
      onRetry: (error, delay) =>
        log.warn({ err: describeError(error), retryInMs: delay }, `schedules: could not ${what}; retrying`),
    });
  }
}

/**
 * The record a publish action enqueues: its `payload` with {schedule}, {tick} and {term} filled in, or by
 * default a JSON object of the three.
 */
export function fillPayload(
  payload: string | undefined,
  values: { schedule: string; tick: string; term: number },
): string {
  if (payload === undefined) return JSON.stringify(values);
  return payload
    .replaceAll('{schedule}', values.schedule)
    .replaceAll('{tick}', values.tick)
    .replaceAll('{term}', String(values.term));
}
