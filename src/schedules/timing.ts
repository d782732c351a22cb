// When a schedule ticks, computed from the schedule and the wall clock only (never from when the last
// firing happened, so the timer cannot drift): a cron expression by croner, in the schedule's time zone, or a
// fixed interval aligned to the epoch (every = "30s" ticks at :00 and :30 of each minute).
import { Cron } from 'croner';

import type { ScheduleTiming } from '../config/types.js';

/** Ticks a catch-up enumerates at most to count the missed ones of a cron schedule (croner steps one by one). */
export const MAX_COUNTED_TICKS = 10_000;

export interface Timing {
  /** The first tick strictly after `afterMs` (ms since 1970); undefined when the schedule never fires again. */
  next(afterMs: number): number | undefined;
  /**
   * The ticks in (afterMs, uptoMs], the latest `keep` of them in time order, and how many came before those
   * (exact for an interval; for cron counted up to MAX_COUNTED_TICKS, then `capped`).
   */
  between(afterMs: number, uptoMs: number, keep: number): { kept: number[]; older: number; capped: boolean };
  /** "every 1s" or "cron 0 * * * * (UTC)": for listings. */
  readonly description: string;
}

export function timingOf(timing: ScheduleTiming): Timing {
  return timing.kind === 'every' ? everyTiming(timing.everyMs) : cronTiming(timing.cron, timing.timezone);
}

function everyTiming(everyMs: number): Timing {
  const next = (afterMs: number): number => (Math.floor(afterMs / everyMs) + 1) * everyMs;
  return {
    next,
    between(afterMs, uptoMs, keep) {
      if (uptoMs <= afterMs) return { kept: [], older: 0, capped: false };
      const first = next(afterMs);
      const last = Math.floor(uptoMs / everyMs) * everyMs;
      const total = last < first ? 0 : (last - first) / everyMs + 1;
      const kept: number[] = [];
      for (let index = Math.max(0, total - keep); index < total; index++) kept.push(first + index * everyMs);
      return { kept, older: total - kept.length, capped: false };
    },
    description: `every ${formatMs(everyMs)}`,
  };
}

function cronTiming(expression: string, timezone: string): Timing {
  const cron = new Cron(expression, { timezone, paused: true });
  const next = (afterMs: number): number | undefined => cron.nextRun(new Date(afterMs))?.getTime();
  return {
    next,
    between(afterMs, uptoMs, keep) {
      if (uptoMs <= afterMs) return { kept: [], older: 0, capped: false };
      // The latest `keep`, stepping back from just after uptoMs (previousRuns is strictly before).
      const kept =
        keep < 1
          ? []
          : cron
              .previousRuns(keep, new Date(uptoMs + 1))
              .map((date) => date.getTime())
              .filter((ms) => ms > afterMs && ms <= uptoMs)
              .reverse();
      const bound = kept[0] ?? uptoMs + 1;
      let older = 0;
      for (let tick = next(afterMs); tick !== undefined && tick < bound; tick = next(tick)) {
        if (++older >= MAX_COUNTED_TICKS) return { kept, older, capped: true };
      }
      return { kept, older, capped: false };
    },
    description: `cron ${expression} (${timezone})`,
  };
}

function formatMs(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1_000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
