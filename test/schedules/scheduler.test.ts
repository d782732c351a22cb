// The scheduler on PGlite: the catch-up of each `missed` policy, the tick row that makes a tick apply once,
// the fence that refuses a deposed term, and live firing on time with the tick and term in every effect.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sql } from 'drizzle-orm';

import { assertFence, raiseFence } from '../../src/cluster/fence.js';
import type { ComponentContext } from '../../src/components/component.js';
import type { ScheduleConfig } from '../../src/config/types.js';
import { FencedError } from '../../src/errors.js';
import { EventLog } from '../../src/events/log.js';
import { createLogger } from '../../src/log.js';
import { RedisTickPush } from '../../src/schedules/redis-push.js';
import type { SchedulerOptions } from '../../src/schedules/scheduler.js';
import { Scheduler } from '../../src/schedules/scheduler.js';
import { advanceState, scheduleStates } from '../../src/schedules/ticks.js';
import { timingOf } from '../../src/schedules/timing.js';
import { waitFor } from '../support/group.js';
import type { TempStore } from '../support/pglite.js';
import type { TestRedis } from '../support/redis.js';
import { openTestRedis } from '../support/redis.js';
import { openTempStore } from '../support/pglite.js';

const log = createLogger({ level: 'silent' });
const GROUP = 'g';
let temp: TempStore;
let events: EventLog;
const running: Array<{ scheduler: Scheduler; abort: AbortController }> = [];

beforeEach(async () => {
  temp = await openTempStore();
  events = new EventLog(temp.store, log);
  await events.start();
  await raiseFence(temp.store, GROUP, 1);
});

afterEach(async () => {
  for (const { scheduler, abort } of running.splice(0)) {
    abort.abort();
    await scheduler.stop();
  }
  await events.close();
  await temp.dispose();
});

function schedule(overrides: Partial<ScheduleConfig> = {}): ScheduleConfig {
  return {
    name: 's',
    timing: { kind: 'every', everyMs: 1_000, timezone: 'UTC' },
    missed: 'skip',
    missedLimit: 100,
    jitterMs: 0,
    namespace: 'default',
    action: { kind: 'publish', queue: 'jobs', payload: undefined, backend: 'store', key: 'jobs' },
    ...overrides,
  };
}

/** Starts a scheduler as the supervisor would, on term `term`; its run ends at afterEach or abort. */
function start(
  schedules: ScheduleConfig[],
  options: { term?: number; now?: () => number; failures?: unknown[]; redis?: RedisTickPush } = {},
): { scheduler: Scheduler; abort: AbortController } {
  const term = options.term ?? 1;
  const abort = new AbortController();
  const ctx: ComponentContext = {
    name: 'baton.schedules',
    signal: abort.signal,
    term,
    assertPrimary: (tx) => assertFence(tx, GROUP, term),
    fail: (error) => options.failures?.push(error),
    log,
    store: temp.store,
  };
  const settings: SchedulerOptions = {
    schedules: Object.fromEntries(schedules.map((entry) => [entry.name, entry])),
    tasks: {},
    node: 'n1',
    events,
    store: temp.store,
    log,
    ...(options.now ? { now: options.now } : {}),
    ...(options.redis ? { redis: options.redis } : {}),
  };
  const scheduler = new Scheduler(settings);
  scheduler.start(ctx);
  const entry = { scheduler, abort };
  running.push(entry);
  return entry;
}

async function rows(statement: string): Promise<Array<Record<string, unknown>>> {
  return temp.store.execute(sql.raw(statement));
}

async function records(): Promise<Array<{ schedule: string; tick: string; term: number }>> {
  const found = await rows(`SELECT payload FROM baton_queue_records WHERE queue = 'jobs' ORDER BY id`);
  return found.map(
    (row) =>
      JSON.parse(Buffer.from(row['payload'] as Uint8Array).toString()) as {
        schedule: string;
        tick: string;
        term: number;
      },
  );
}

async function ticks(): Promise<Array<{ tick: number; term: number; cause: string }>> {
  const found = await rows(
    `SELECT (extract(epoch FROM tick_time) * 1000)::float8 AS t, term, cause FROM baton_schedule_ticks ORDER BY tick_time`,
  );
  return found.map((row) => ({
    tick: Number(row['t']),
    term: Number(row['term']),
    cause: String(row['cause']),
  }));
}

/** The catch-up of a 1-second schedule whose last decided tick was T0, run at T0 + 10.5 s. */
async function catchUp(missed: ScheduleConfig['missed'], missedLimit = 100) {
  const t0 = 1_700_000_000_000;
  await temp.store.transaction((tx) => advanceState(tx, 's', t0));
  // The clock stands still at T0 + 10.5 s: the timer waits for T0 + 11 s forever, only the catch-up acts.
  const every = schedule({ missed, missedLimit });
  start([every], { now: () => t0 + 10_500 });
  const state = await waitFor(
    async () => (await scheduleStates(temp.store)).find((entry) => entry.coveredUntil >= t0 + 10_000),
    10_000,
    'the catch-up',
  );
  return { t0, state, applied: await ticks(), effects: await records() };
}

describe('timing', () => {
  it('aligns intervals to the epoch and reads 6-field cron expressions', () => {
    const every = timingOf({ kind: 'every', everyMs: 30_000, timezone: 'UTC' });
    expect(every.next(Date.UTC(2026, 0, 1, 0, 0, 10))).toBe(Date.UTC(2026, 0, 1, 0, 0, 30));
    expect(every.next(Date.UTC(2026, 0, 1, 0, 0, 30))).toBe(Date.UTC(2026, 0, 1, 0, 1, 0));
    const cron = timingOf({ kind: 'cron', cron: '*/15 * * * * *', timezone: 'UTC' });
    expect(cron.next(Date.UTC(2026, 0, 1, 0, 0, 15))).toBe(Date.UTC(2026, 0, 1, 0, 0, 30));
    const paris = timingOf({ kind: 'cron', cron: '0 3 * * *', timezone: 'Europe/Paris' });
    expect(paris.next(Date.UTC(2026, 0, 1))).toBe(Date.UTC(2026, 0, 1, 2, 0, 0));
  });

  it('counts the ticks between two times, keeping the latest', () => {
    const every = timingOf({ kind: 'every', everyMs: 1_000, timezone: 'UTC' });
    expect(every.between(0, 10_500, 3)).toEqual({ kept: [8_000, 9_000, 10_000], older: 7, capped: false });
    expect(every.between(0, 10_500, 0)).toEqual({ kept: [], older: 10, capped: false });
    const cron = timingOf({ kind: 'cron', cron: '* * * * * *', timezone: 'UTC' });
    expect(cron.between(0, 10_500, 3)).toEqual({ kept: [8_000, 9_000, 10_000], older: 7, capped: false });
    expect(cron.between(0, 10_500, 0)).toEqual({ kept: [], older: 10, capped: false });
  });
});

describe('the catch-up of a new primary', () => {
  it('missed = "skip" applies none of the ticks that fell and counts them', async () => {
    const { state, applied, effects } = await catchUp('skip');
    expect(applied).toEqual([]);
    expect(effects).toEqual([]);
    expect(state.missed).toBe(10);
  });

  it('missed = "last" applies the latest only', async () => {
    const { t0, state, applied, effects } = await catchUp('last');
    expect(applied).toEqual([{ tick: t0 + 10_000, term: 1, cause: 'catch-up' }]);
    expect(effects).toEqual([{ schedule: 's', tick: new Date(t0 + 10_000).toISOString(), term: 1 }]);
    expect(state.missed).toBe(9);
  });

  it('missed = "all" applies every one, at most missed_limit, in order', async () => {
    const { t0, state, applied, effects } = await catchUp('all', 4);
    const expected = [7_000, 8_000, 9_000, 10_000].map((offset) => t0 + offset);
    expect(applied.map((tick) => tick.tick)).toEqual(expected);
    expect(effects.map((effect) => effect.tick)).toEqual(expected.map((ms) => new Date(ms).toISOString()));
    expect(state.missed).toBe(6);
    // Each tick is an event too, with its time and term.
    const fired = await events.list({ keys: ['schedule.s.fired'] });
    expect(fired.map((event) => event.value)).toEqual(expected.map((ms) => new Date(ms).toISOString()));
    expect(JSON.parse(fired[0]?.context ?? '{}')).toMatchObject({
      schedule: 's',
      term: 1,
      cause: 'catch-up',
    });
  });

  it('a tick whose row exists is not applied again', async () => {
    const t0 = 1_700_000_000_000;
    await temp.store.transaction((tx) => advanceState(tx, 's', t0));
    // The tick at T0 + 3 s was applied by an earlier primary (its row committed with its effect).
    await rows(
      `INSERT INTO baton_schedule_ticks (schedule, tick_time, term, node, lateness_ms, cause)
       VALUES ('s', to_timestamp(${(t0 + 3_000) / 1000}), 1, 'n0', 0, 'on-time')`,
    );
    start([schedule({ missed: 'all' })], { now: () => t0 + 5_500 });
    await waitFor(
      async () => ((await scheduleStates(temp.store))[0]?.coveredUntil ?? 0) >= t0 + 5_000 || undefined,
      10_000,
      'the catch-up',
    );
    const effects = await records();
    expect(effects.map((effect) => Date.parse(effect.tick) - t0)).toEqual([1_000, 2_000, 4_000, 5_000]);
    expect((await ticks()).map((tick) => tick.tick - t0)).toEqual([1_000, 2_000, 3_000, 4_000, 5_000]);
  });

  it('a deposed term applies nothing', async () => {
    const t0 = 1_700_000_000_000;
    await temp.store.transaction((tx) => advanceState(tx, 's', t0));
    await raiseFence(temp.store, GROUP, 2);
    const failures: unknown[] = [];
    start([schedule({ missed: 'all' })], { term: 1, now: () => t0 + 5_500, failures });
    const { scheduler } = start([schedule({ missed: 'all', name: 'other' })], { term: 1 });
    await expect(scheduler.fire('other')).rejects.toBeInstanceOf(FencedError);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await ticks()).toEqual([]);
    expect(await records()).toEqual([]);
    // A FencedError ends the run quietly: the supervisor stops it on the role change.
    expect(failures).toEqual([]);
  });
});

describe('live firing', () => {
  it('fires each tick once, on time, with its tick time and term in the record and the event', async () => {
    const every = schedule({ timing: { kind: 'every', everyMs: 100, timezone: 'UTC' }, missed: 'all' });
    const started = Date.now();
    start([every], { term: 1 });
    const applied = await waitFor(
      async () => {
        const found = await ticks();
        return found.length >= 15 ? found : undefined;
      },
      10_000,
      '15 ticks',
    );
    const times = applied.map((tick) => tick.tick);
    // Consecutive ticks of the interval, none twice, the first one after the start.
    expect(times[0]).toBeGreaterThan(started);
    for (let index = 1; index < times.length; index++) {
      expect((times[index] as number) - (times[index - 1] as number)).toBe(100);
    }
    const effects = await records();
    expect(effects.slice(0, times.length).map((effect) => Date.parse(effect.tick))).toEqual(times);
    expect(effects.every((effect) => effect.term === 1)).toBe(true);
    const lateness = await rows(`SELECT lateness_ms FROM baton_schedule_ticks ORDER BY lateness_ms`);
    const late = lateness.map((row) => Number(row['lateness_ms']));
    console.log(
      `lateness on PGlite over ${late.length} ticks: median ${late[Math.floor(late.length / 2)]} ms, max ${late.at(-1)} ms`,
    );
    expect(late.at(-1)).toBeLessThan(1_000);
  });

  it('fire applies one tick now, recorded as manual', async () => {
    const hourly = schedule({ timing: { kind: 'cron', cron: '0 * * * *', timezone: 'UTC' } });
    const { scheduler } = start([hourly]);
    await waitFor(async () => (await scheduleStates(temp.store))[0], 10_000, 'the state row');
    const before = Date.now();
    const fired = await scheduler.fire('s');
    expect(fired.applied).toBe(true);
    expect(fired.tick).toBeGreaterThanOrEqual(before);
    expect(await ticks()).toEqual([{ tick: fired.tick, term: 1, cause: 'manual' }]);
    expect(await records()).toHaveLength(1);
  });
});

describe('a Redis queue target', () => {
  let redis: TestRedis;
  let push: RedisTickPush;
  let name: string;
  let list: string;
  beforeEach(async () => {
    redis = await openTestRedis();
    push = new RedisTickPush(redis.url);
    name = `${redis.prefix}-s`;
    list = redis.queue();
  });
  afterEach(async () => {
    await push.close();
    const guards = await redis.client.keys(`baton:schedule-tick:${name}:*`);
    if (guards.length > 0) await redis.client.del(...guards);
    await redis.cleanup();
  });

  const toRedis = (missed: ScheduleConfig['missed']): ScheduleConfig =>
    schedule({
      name,
      missed,
      action: { kind: 'publish', queue: 'fast', payload: undefined, backend: 'redis', key: list },
    });

  async function pushed(): Promise<string[]> {
    const found = await redis.client.lrange(list, 0, -1);
    return found.reverse().map((record) => (JSON.parse(record) as { tick: string }).tick);
  }

  it('pushes each tick once after its row commits, and marks it pushed', async () => {
    const t0 = 1_700_000_000_000;
    await temp.store.transaction((tx) => advanceState(tx, name, t0));
    start([toRedis('all')], { now: () => t0 + 3_500, redis: push });
    const expected = [1_000, 2_000, 3_000].map((offset) => new Date(t0 + offset).toISOString());
    await waitFor(async () => ((await pushed()).length >= 3 ? true : undefined), 10_000, 'three pushes');
    expect(await pushed()).toEqual(expected);
    await waitFor(
      async () => {
        const left = await rows(`SELECT count(*) AS n FROM baton_schedule_ticks WHERE NOT pushed`);
        return Number(left[0]?.['n']) === 0 ? true : undefined;
      },
      10_000,
      'every tick marked pushed',
    );
  });

  it('a new primary finishes the pushes its predecessor left, never twice', async () => {
    const t0 = 1_700_000_000_000;
    await temp.store.transaction((tx) => advanceState(tx, name, t0 + 2_000));
    // Two ticks committed unpushed: the first one's push had landed (its guard is there), not the second's.
    for (const offset of [1_000, 2_000]) {
      await rows(
        `INSERT INTO baton_schedule_ticks (schedule, tick_time, term, node, lateness_ms, cause, pushed)
         VALUES ('${name}', to_timestamp(${(t0 + offset) / 1000}), 1, 'n0', 0, 'on-time', false)`,
      );
    }
    expect(
      await push.push(
        list,
        Buffer.from(JSON.stringify({ tick: new Date(t0 + 1_000).toISOString() })),
        name,
        t0 + 1_000,
      ),
    ).toBe(true);
    start([toRedis('skip')], { now: () => t0 + 2_500, redis: push });
    await waitFor(
      async () => {
        const left = await rows(`SELECT count(*) AS n FROM baton_schedule_ticks WHERE NOT pushed`);
        return Number(left[0]?.['n']) === 0 ? true : undefined;
      },
      10_000,
      'every tick marked pushed',
    );
    expect(await pushed()).toEqual([1_000, 2_000].map((offset) => new Date(t0 + offset).toISOString()));
    // Pushed again (a retry after a lost reply): nothing.
    expect(await push.push(list, Buffer.from('{}'), name, t0 + 2_000)).toBe(false);
  });
});
