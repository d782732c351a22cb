// What every variant of the ingest-redis benchmark shares: the run's context (the records, the bench's own
// Redis client, the key prefix, the deadline), a fresh database and key prefix per variant that are removed
// even on failure, and the timed drain window with the CPU it used.
import type { Redis } from 'ioredis';

import type { CpuSnapshot, Drain, DrainWatch, FreshDatabase, Ping } from './redis-pg.js';
import { connect, cpuShares, cpuSnapshot, createDatabase, deleteKeys, watchDrain } from './redis-pg.js';
import type { Deadline } from './support.js';

/** (a) Baton defaults, (b) Baton one record per transaction, (c) limit, (d) BullMQ, (e) graphile-worker. */
export const VARIANT_IDS = ['a', 'b', 'c', 'd', 'e'] as const;
export type VariantId = (typeof VARIANT_IDS)[number];

export interface VariantContext {
  readonly pings: readonly Ping[];
  /** The same records as the bytes a producer LPUSHes. */
  readonly records: readonly Buffer[];
  /** The bench's own Redis client (pushes, cleanup). */
  readonly redis: Redis;
  /** Prefix of every Redis key of this run. */
  readonly prefix: string;
  /** A temporary folder of this run, for node configs and data folders. */
  readonly tmp: string;
  readonly deadline: Deadline;
  readonly pollMs: number;
}

/** One measured figure. */
export interface Measurement {
  readonly variant: VariantId;
  readonly label: string;
  readonly drain: Drain;
  /** Batches the limit keeps in flight (its loops); undefined for the other variants. */
  readonly loops?: number;
  /** Records waiting when the window opened (pushed or enqueued before it). */
  readonly available: number;
  /** Settings, preparation times, CPU, leftovers: printed under the figure. */
  readonly notes: readonly string[];
}

export function rate(measurement: Measurement): number {
  const { records, seconds } = measurement.drain;
  return seconds > 0 ? records / seconds : 0;
}

export interface Fixtures {
  readonly db: FreshDatabase;
  /** Prefix of this variant's Redis keys (under the run's prefix). */
  readonly keyPrefix: string;
}

/** Runs `work` on a fresh database and key prefix; drops the database and deletes the keys afterwards. */
export async function withFixtures<T>(
  ctx: VariantContext,
  name: string,
  work: (fixtures: Fixtures) => Promise<T>,
): Promise<T> {
  const db = await createDatabase();
  const keyPrefix = `${ctx.prefix}:${name}`;
  try {
    return await work({ db, keyPrefix });
  } finally {
    await cleanup(`Redis keys ${keyPrefix}:*`, () => deleteKeys(ctx.redis, `${keyPrefix}:*`));
    await cleanup(`database ${db.name}`, () => db.drop());
  }
}

/** Cleanup goes on past a failure (reported), so that one leftover does not hide the others. */
export async function cleanup(what: string, step: () => Promise<unknown>): Promise<void> {
  try {
    await step();
  } catch (error) {
    process.stderr.write(`cleanup of ${what} failed: ${String(error)}\n`);
  }
}

export interface Window {
  readonly drain: Drain;
  /** CPU used during the window, per process, as a printable line. */
  readonly cpu: string;
}

/** Times a drain on the database at `url` (see watchDrain), with the CPU of the processes involved. */
export async function measureWindow(
  ctx: VariantContext,
  url: string,
  childPid: number | undefined,
  watch: Omit<DrainWatch, 'db' | 'signal' | 'pollMs'>,
): Promise<Window> {
  const db = await connect(url);
  try {
    const before: CpuSnapshot = await cpuSnapshot(childPid);
    const drain = await watchDrain({ ...watch, db, signal: ctx.deadline.signal, pollMs: ctx.pollMs });
    const after = await cpuSnapshot(childPid);
    return { drain, cpu: cpuShares(before, after, drain.seconds, drain.records) };
  } finally {
    await db.end();
  }
}

/** "time box 30 s: 31,234 of 200,000 drained", or nothing when the window saw the whole drain. */
export function boxNote(drain: Drain, available: number): string[] {
  if (drain.complete) return [];
  return [
    `time box closed the window: ${drain.stored.toLocaleString('en-US')} of ${available.toLocaleString('en-US')} stored`,
  ];
}
