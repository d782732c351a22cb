// [schedules.<name>]: what the loader accepts, and each refusal naming its key.
import { describe, expect, it } from 'vitest';

import { parseDurationMs, resolveConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

const base = {
  queues: {
    jobs: { handler: './h.ts' },
    fast: { handler: './h.ts', backend: 'redis', key: 'fast-list' },
    far: { handler: './h.ts', backend: 'postgres', url: 'postgres://127.0.0.1/other' },
  },
  tasks: { report: { command: 'true' } },
};

function resolve(schedules: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return resolveConfig({ ...base, ...extra, schedules }, { baseDir: '/tmp', env: {} });
}

function refusal(schedules: Record<string, unknown>, extra: Record<string, unknown> = {}): ConfigError {
  try {
    resolve(schedules, extra);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    if (error instanceof ConfigError) return error;
  }
  throw new Error('expected a ConfigError');
}

describe('[schedules.<name>]', () => {
  it('resolves cron and every schedules with their defaults and actions', () => {
    const config = resolve({
      nightly: { cron: '0 3 * * *', timezone: 'Europe/Paris', task: 'report' },
      pulse: { every: '1m30s', publish: { queue: 'jobs', payload: 'tick {tick}' }, missed: 'all' },
      beat: { cron: '*/5 * * * * *', event: { key: 'beat' } },
      pushed: { every: '10s', publish: { queue: 'fast' } },
    });
    expect(config.schedules['pushed']?.action).toMatchObject({ backend: 'redis', key: 'fast-list' });
    expect(config.schedules['nightly']).toEqual({
      name: 'nightly',
      timing: { kind: 'cron', cron: '0 3 * * *', timezone: 'Europe/Paris' },
      missed: 'skip',
      missedLimit: 100,
      jitterMs: 0,
      namespace: 'default',
      action: { kind: 'task', task: 'report' },
    });
    expect(config.schedules['pulse']?.timing).toEqual({ kind: 'every', everyMs: 90_000, timezone: 'UTC' });
    expect(config.schedules['pulse']?.action).toEqual({
      kind: 'publish',
      queue: 'jobs',
      payload: 'tick {tick}',
      backend: 'store',
      key: 'jobs',
    });
    expect(config.schedules['beat']?.action).toEqual({
      kind: 'event',
      namespace: 'default',
      key: 'beat',
      value: undefined,
    });
  });

  it.each([
    [{ cron: '61 * * * *', task: 'report' }, 'schedules.s.cron', /Invalid value for minute/],
    [{ cron: '* * *', task: 'report' }, 'schedules.s.cron', /expected 5 fields .* got 3/],
    [{ cron: '* * * * * * *', task: 'report' }, 'schedules.s.cron', /got 7/],
    [{ every: 'often', task: 'report' }, 'schedules.s.every', /expected a duration/],
    [{ every: '0s', task: 'report' }, 'schedules.s.every', /expected a duration/],
    [
      { cron: '* * * * *', every: '1s', task: 'report' },
      'schedules.s.every',
      /exactly one of "cron" or "every"/,
    ],
    [{ task: 'report' }, 'schedules.s', /exactly one of "cron" or "every"/],
    [{ every: '1s' }, 'schedules.s', /exactly one action .* got 0/],
    [{ every: '1s', task: 'report', event: { key: 'k' } }, 'schedules.s', /exactly one action .* got 2/],
    [{ every: '1s', task: 'nope' }, 'schedules.s.task', /unknown task "nope": expected one of report/],
    [{ every: '1s', publish: { queue: 'nope' } }, 'schedules.s.publish.queue', /unknown queue "nope"/],
    [{ every: '1s', publish: { queue: 'far' } }, 'schedules.s.publish.queue', /"store" or "redis" only/],
    [{ every: '1s', task: 'report', timezone: 'Mars/Olympus' }, 'schedules.s.timezone', /unknown time zone/],
    [{ every: '1s', task: 'report', missed: 'some' }, 'schedules.s.missed', /"skip", "last" or "all"/],
    [{ every: '1s', task: 'report', missed_limit: 0 }, 'schedules.s.missed_limit', /from 1 to 100000/],
    [{ every: '1s', task: 'report', jiter_ms: 5 }, 'schedules.s.jiter_ms', /did you mean "jitter_ms"/],
  ])('refuses %j at its key', (schedule, key, message) => {
    const error = refusal({ s: schedule });
    expect(error.key).toBe(key);
    expect(error.message).toMatch(message);
  });

  it('refuses schedules without the event log', () => {
    const error = refusal(
      { s: { every: '1s', publish: { queue: 'jobs' } } },
      { tasks: {}, events: { enabled: false } },
    );
    expect(error.key).toBe('events.enabled');
  });

  it('reads durations', () => {
    expect(parseDurationMs('500ms')).toBe(500);
    expect(parseDurationMs('1h30m')).toBe(5_400_000);
    expect(parseDurationMs('2d')).toBe(172_800_000);
    expect(parseDurationMs('1.5s')).toBeUndefined();
    expect(parseDurationMs('')).toBeUndefined();
  });
});
