// Reading delays: durations and times as people write them, and the checks every publish path shares.
import { describe, expect, it } from 'vitest';

import { BadRequestError } from '../../src/errors.js';
import { checkDelay, MAX_DELAY_MS, parseDuration, parseTime } from '../../src/queue/delay.js';

describe('parseDuration', () => {
  it.each([
    ['30s', 30_000],
    ['500ms', 500],
    ['1.5m', 90_000],
    ['2h', 7_200_000],
    ['7d', 604_800_000],
    ['1500', 1_500],
    [' 10 s ', 10_000],
    ['0', 0],
  ])('reads %j as %i ms', (text, ms) => {
    expect(parseDuration(text, '--delay')).toBe(ms);
  });

  it.each(['', 's', '-1s', '5x', '1e3', '1.5', '1 2s', 'PT30S'])('refuses %j naming the flag', (text) => {
    expect(() => parseDuration(text, '--delay')).toThrow(BadRequestError);
    expect(() => parseDuration(text, '--delay')).toThrow(/--delay/);
  });
});

describe('parseTime', () => {
  it('reads ISO 8601 times with an offset', () => {
    expect(parseTime('2026-12-06T10:00:00Z', 'x').toISOString()).toBe('2026-12-06T10:00:00.000Z');
    expect(parseTime('2026-12-06T11:00:00.250+01:00', 'x').toISOString()).toBe('2026-12-06T10:00:00.250Z');
  });

  it.each(['2026-12-06T10:00:00', '2026-12-06', 'tomorrow', '2026-13-40T10:00:00Z', '1765000000000'])(
    'refuses %j (no offset, no time, or no date)',
    (text) => {
      expect(() => parseTime(text, '--at')).toThrow(/--at: expected an ISO 8601 time/);
    },
  );
});

describe('checkDelay', () => {
  const now = Date.parse('2026-12-06T10:00:00Z');

  it('is none for nothing, a zero delay and a time not ahead', () => {
    expect(checkDelay(undefined, undefined, now)).toBeUndefined();
    expect(checkDelay({ delayMs: 0 }, undefined, now)).toBeUndefined();
    expect(checkDelay({ runAt: new Date(now) }, undefined, now)).toBeUndefined();
    expect(checkDelay({ runAt: new Date(now - 1) }, undefined, now)).toBeUndefined();
  });

  it('keeps a delay (whole milliseconds, rounded up) or a time ahead, up to the bound', () => {
    expect(checkDelay({ delayMs: 1.2 }, undefined, now)).toEqual({ delayMs: 2 });
    expect(checkDelay({ delayMs: MAX_DELAY_MS }, undefined, now)).toEqual({ delayMs: MAX_DELAY_MS });
    const at = new Date(now + MAX_DELAY_MS);
    expect(checkDelay({ runAt: at }, undefined, now)).toEqual({ runAt: at });
  });

  it('refuses both, a negative or non-number delay, an invalid time, and anything past the bound', () => {
    const names = { delay: 'delay_ms', at: 'run_at' };
    const refused: Array<[Parameters<typeof checkDelay>[0], RegExp]> = [
      [{ delayMs: 5, runAt: new Date(now + 5) }, /give delay_ms or run_at, not both/],
      [{ delayMs: -1 }, /delay_ms: expected a delay of 0 or more/],
      [{ delayMs: Number.NaN }, /delay_ms: expected a delay/],
      [{ delayMs: Number.POSITIVE_INFINITY }, /delay_ms: expected a delay/],
      [{ runAt: new Date(Number.NaN) }, /run_at: expected a valid time/],
      [{ delayMs: MAX_DELAY_MS + 1 }, /delay_ms: at most 365 days/],
      [{ runAt: new Date(now + MAX_DELAY_MS + 1) }, /run_at: at most 365 days/],
    ];
    for (const [options, message] of refused) {
      expect(() => checkDelay(options, names, now)).toThrow(message);
    }
  });
});
