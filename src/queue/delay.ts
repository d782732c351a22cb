// Delayed records: a record published with a delay or a time is not run before that time. This module
// reads and checks what callers give (`delayMs`/`runAt` in code, `30s` on the command line and in HTTP
// headers) into one Delay that the queue backends store; a delay of zero or a time already past is none.
import { BadRequestError } from '../errors.js';
import type { PerRecord } from '../util/per-record.js';
import { anyValue, valueAt } from '../util/per-record.js';

/** HTTP ingest: a delay for every record of the request (a duration: `30s`, `1500`, …). */
export const DELAY_HEADER = 'baton-delay';
/** HTTP ingest: a time before which no record of the request runs (ISO 8601 with an offset). */
export const RUN_AT_HEADER = 'baton-run-at';
/** HTTP ingest: `json` makes each NDJSON line an envelope with the record and its own delay (see ingest route). */
export const ENVELOPE_HEADER = 'baton-envelope';

/** The longest delay accepted (365 days): a longer one is almost surely a unit mistake. */
export const MAX_DELAY_MS = 365 * 24 * 60 * 60 * 1000;

/** When published records may first run, as a caller gives it: at most one of the two. */
export interface PublishOptions {
  /** Milliseconds from now (the clock of the queue's backend decides: see docs/delayed-records.md). */
  readonly delayMs?: number | undefined;
  /** Not before this time. */
  readonly runAt?: Date | undefined;
  /** The key of every record (see docs/keys.md). */
  readonly key?: string | undefined;
  /** The idempotency id of each record, one per record: a duplicate within the dedup window is dropped. */
  readonly ids?: readonly (string | undefined)[] | undefined;
}

/** A checked delay, never zero nor past: relative (counted by the backend's clock) or absolute. */
export type Delay = { readonly delayMs: number } | { readonly runAt: Date };

/**
 * The delay of each record of a publish: one for all, or one per record (undefined: at once). Absent:
 * every record at once.
 */
export type RecordDelays = PerRecord<Delay>;

/** The delay of the record at `index`. */
export function delayAt(delays: RecordDelays | undefined, index: number): Delay | undefined {
  return valueAt(delays, index);
}

/** Whether any record of the publish waits. */
export function anyDelay(delays: RecordDelays | undefined): boolean {
  return anyValue(delays);
}

/**
 * Checks what a caller gave: BadRequestError naming the problem when both are given, a delay is negative
 * or not a number, a time is invalid, or either lies more than MAX_DELAY_MS ahead. Undefined when the
 * records may run at once (no delay, zero, or a time already past). `names` are the caller's words for the
 * two fields (e.g. `--delay` and `--at`), for the message.
 */
export function checkDelay(
  options: PublishOptions | undefined,
  names: { delay: string; at: string } = { delay: 'delayMs', at: 'runAt' },
  now: number = Date.now(),
): Delay | undefined {
  const { delayMs, runAt } = options ?? {};
  if (delayMs !== undefined && runAt !== undefined) {
    throw new BadRequestError(`give ${names.delay} or ${names.at}, not both`);
  }
  if (delayMs !== undefined) {
    if (!Number.isFinite(delayMs) || delayMs < 0) {
      throw new BadRequestError(`${names.delay}: expected a delay of 0 or more milliseconds, got ${delayMs}`);
    }
    if (delayMs > MAX_DELAY_MS) throw tooFar(names.delay, `${delayMs} ms`);
    return delayMs === 0 ? undefined : { delayMs: Math.ceil(delayMs) };
  }
  if (runAt !== undefined) {
    if (!(runAt instanceof Date) || Number.isNaN(runAt.getTime())) {
      throw new BadRequestError(`${names.at}: expected a valid time`);
    }
    if (runAt.getTime() - now > MAX_DELAY_MS) throw tooFar(names.at, runAt.toISOString());
    return runAt.getTime() <= now ? undefined : { runAt };
  }
  return undefined;
}

function tooFar(name: string, given: string): BadRequestError {
  return new BadRequestError(
    `${name}: at most ${MAX_DELAY_MS / 86_400_000} days ahead (${MAX_DELAY_MS} ms), got ${given}`,
  );
}

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A duration as people write it: a number and a unit (`500ms`, `30s`, `1.5m`, `2h`, `7d`), or a bare
 * integer of milliseconds. BadRequestError naming `name` otherwise.
 */
export function parseDuration(text: string, name: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!match) {
    throw new BadRequestError(
      `${name}: expected a duration such as 30s, 500ms, 5m, 2h, 1d or a number of milliseconds, got "${text}"`,
    );
  }
  const [, amount = '', unit] = match;
  if (unit === undefined && amount.includes('.')) {
    throw new BadRequestError(`${name}: a bare number is milliseconds and must be whole, got "${text}"`);
  }
  return Math.ceil(Number(amount) * (UNITS[unit ?? 'ms'] ?? 1));
}

/**
 * A time as ISO 8601 with a date, a time and an offset (`2026-12-06T10:00:00Z`, `…+01:00`): a time without
 * an offset would mean another instant on each machine. BadRequestError naming `name` otherwise.
 */
export function parseTime(text: string, name: string): Date {
  const iso = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i;
  const time = new Date(text.trim());
  if (!iso.test(text.trim()) || Number.isNaN(time.getTime())) {
    throw new BadRequestError(
      `${name}: expected an ISO 8601 time with an offset such as 2026-12-06T10:00:00Z, got "${text}"`,
    );
  }
  return time;
}
