// Redis ingest into PostgreSQL: the same quickstart records LPUSHed to Redis, drained into `ping` by
// (a) a Baton node with its defaults, (b) Baton with one record per transaction, (c) a hand-written limit,
// (d) BullMQ and (e) graphile-worker, each on a fresh database; prints records/s, ratios and the goals.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';

import { runBaton } from './ingest-redis-baton.js';
import { runBullmq, runGraphile, runLimit } from './ingest-redis-peers.js';
import type { Measurement, VariantContext, VariantId } from './ingest-redis-variant.js';
import { rate, VARIANT_IDS } from './ingest-redis-variant.js';
import {
  deleteKeys,
  describeServers,
  encodePings,
  makePings,
  randomSuffix,
  redisClient,
} from './redis-pg.js';
import {
  Deadline,
  DeadlineError,
  describeMachine,
  formatMachine,
  formatRate,
  integerOption,
  parseOptions,
  UsageError,
} from './support.js';

const NAME = 'ingest-redis';
const OPTIONS = [
  'records',
  'only',
  'single-records',
  'time-box-s',
  'bullmq-time-box-s',
  'limit-loops',
  'bullmq-pool',
  'poll-ms',
  'timeout-s',
  'cpu-prof-dir',
] as const;
const DEFAULTS = {
  records: 200_000,
  /** (b) runs about 1k records/s: a subset keeps the run bounded. */
  singleRecords: 20_000,
  /** Time box of (b) and (e), the slow ones. */
  timeBoxS: 30,
  /** Time box of (d): it drains the whole set in well under this on the reference machine. */
  bullmqTimeBoxS: 180,
  limitLoops: '1,4',
  pollMs: 100,
  timeoutS: 900,
} as const;
/** The goals: (a) at least this share of (c), and at least this multiple of (d). */
const GOAL_OF_LIMIT = 0.6;
const GOAL_OF_BULLMQ = 10;

interface Settings {
  readonly records: number;
  readonly only: ReadonlySet<VariantId>;
  readonly singleRecords: number;
  readonly timeBoxS: number;
  readonly bullmqTimeBoxS: number;
  readonly limitLoops: readonly number[];
  readonly bullmqPool: number | undefined;
  readonly pollMs: number;
  readonly timeoutS: number;
  readonly cpuProfDir: string | undefined;
  readonly loadAtStart: number;
}

export async function main(args: readonly string[]): Promise<number> {
  const settings = readSettings(args);
  const deadline = new Deadline(settings.timeoutS * 1000);
  // A signal, or an error event no one listens to (a library's), ends the run the way the deadline does, so
  // that the node child, the databases and the keys are still cleaned up.
  const stop: { reason?: string } = {};
  const onSignal = (signal: NodeJS.Signals): void => {
    stop.reason = `INTERRUPTED by ${signal}`;
    deadline.cancel();
  };
  const onCrash = (error: Error): void => {
    process.stderr.write(`${error.stack ?? error.message}\n`);
    stop.reason = `FAILED: ${error.message}`;
    deadline.cancel();
  };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal).on('uncaughtException', onCrash);
  const measurements: Measurement[] = [];
  const redis = redisClient();
  const prefix = `bench-${NAME}-${randomSuffix()}`;
  const tmp = await mkdtemp(join(os.tmpdir(), 'baton-bench-'));
  try {
    process.stdout.write(`${await describeServers(redis)}\n`);
    const ctx = makeContext(settings, redis, prefix, tmp, deadline);
    await runVariants(settings, ctx, measurements);
    printSummary(settings, measurements);
    printJson(measurements);
    return 0;
  } catch (error) {
    printSummary(settings, measurements);
    process.stdout.write(`${failureReason(error, stop.reason, settings)}; the figures above are partial\n`);
    printJson(measurements);
    return 1;
  } finally {
    deadline.dispose();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal).off('uncaughtException', onCrash);
    await deleteKeys(redis, `${prefix}:*`).catch(() => undefined);
    redis.disconnect();
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Why the run ended early: a signal or crash (`stopped`), the deadline, or an error (its stack to stderr). */
function failureReason(error: unknown, stopped: string | undefined, settings: Settings): string {
  if (error instanceof DeadlineError) return stopped ?? `TIMEOUT: not finished within ${settings.timeoutS} s`;
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  return `FAILED: ${error instanceof Error ? error.message : String(error)}`;
}

/** The 1-minute load average: on a shared machine it says how much the figures may be off. */
function loadAverage(): number {
  return os.loadavg()[0] ?? 0;
}

function readSettings(args: readonly string[]): Settings {
  const options = parseOptions(args, OPTIONS);
  return {
    records: integerOption(options, 'records', DEFAULTS.records),
    only: parseOnly(options.get('only')),
    singleRecords: integerOption(options, 'single-records', DEFAULTS.singleRecords),
    timeBoxS: integerOption(options, 'time-box-s', DEFAULTS.timeBoxS),
    bullmqTimeBoxS: integerOption(options, 'bullmq-time-box-s', DEFAULTS.bullmqTimeBoxS),
    limitLoops: parseIntegers('limit-loops', options.get('limit-loops') ?? DEFAULTS.limitLoops),
    bullmqPool: options.has('bullmq-pool') ? integerOption(options, 'bullmq-pool', 1) : undefined,
    pollMs: integerOption(options, 'poll-ms', DEFAULTS.pollMs),
    timeoutS: integerOption(options, 'timeout-s', DEFAULTS.timeoutS),
    cpuProfDir: options.get('cpu-prof-dir'),
    loadAtStart: loadAverage(),
  };
}

function parseOnly(text: string | undefined): ReadonlySet<VariantId> {
  if (text === undefined) return new Set(VARIANT_IDS);
  const chosen = new Set<VariantId>();
  for (const part of text.split(',')) {
    const id = VARIANT_IDS.find((candidate) => candidate === part.trim());
    if (!id) throw new UsageError(`--only expects letters from ${VARIANT_IDS.join(',')}, got "${part}"`);
    chosen.add(id);
  }
  return chosen;
}

function parseIntegers(name: string, text: string): number[] {
  const values = text.split(',').map(Number);
  if (values.some((value) => !Number.isInteger(value) || value < 1))
    throw new UsageError(`--${name} expects positive integers separated by commas, got ${text}`);
  return values;
}

function makeContext(
  settings: Settings,
  redis: VariantContext['redis'],
  prefix: string,
  tmp: string,
  deadline: Deadline,
): VariantContext {
  const pings = makePings(settings.records);
  return { pings, records: encodePings(pings), redis, prefix, tmp, deadline, pollMs: settings.pollMs };
}

/** Runs the chosen variants in order (a, c, b, d, e: the headline pair first), printing each when done. */
async function runVariants(settings: Settings, ctx: VariantContext, done: Measurement[]): Promise<void> {
  process.stdout.write(
    `${NAME}: ${settings.records} records; variants ${[...settings.only].join(', ')}; drain timed from ` +
      `consumer start (node ready) to the last row stored, polling count(*) every ${settings.pollMs} ms\n`,
  );
  const steps: Array<[VariantId, () => Promise<Measurement>]> = [
    ['a', () => runBaton(ctx, batonDefaults(settings, ctx))],
    ...settings.limitLoops.map((loops): [VariantId, () => Promise<Measurement>] => [
      'c',
      () => runLimit(ctx, loops),
    ]),
    ['b', () => runBaton(ctx, batonSingle(settings, ctx))],
    ['d', () => runBullmq(ctx, peerOptions(settings, settings.bullmqTimeBoxS))],
    ['e', () => runGraphile(ctx, peerOptions(settings, settings.timeBoxS))],
  ];
  for (const [id, step] of steps) {
    if (!settings.only.has(id)) continue;
    ctx.deadline.check();
    const measurement = await step();
    done.push(measurement);
    printMeasurement(measurement);
  }
}

function batonDefaults(settings: Settings, ctx: VariantContext): Parameters<typeof runBaton>[1] {
  const profile = settings.cpuProfDir;
  return {
    variant: 'a',
    label: '(a) Baton, defaults (batch_size 500, concurrency 4 on Redis)',
    queueToml: '',
    records: ctx.records,
    timeBoxMs: undefined,
    notes: ['node child process, quickstart handler (processBatch), PostgreSQL store, pool_size 10'],
    nodeArgs: profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profile}`],
  };
}

function batonSingle(settings: Settings, ctx: VariantContext): Parameters<typeof runBaton>[1] {
  const subset = Math.min(settings.singleRecords, ctx.records.length);
  return {
    variant: 'b',
    label: '(b) Baton, one record per transaction (batch_size 1)',
    queueToml: 'batch_size = 1',
    records: ctx.records.slice(0, subset),
    timeBoxMs: settings.timeBoxS * 1000,
    notes: [
      `measured on the first ${subset.toLocaleString('en-US')} records (subset), time box ${settings.timeBoxS} s`,
    ],
    nodeArgs: [],
  };
}

function peerOptions(settings: Settings, timeBoxS: number): Parameters<typeof runBullmq>[1] {
  return {
    timeBoxMs: timeBoxS * 1000,
    ...(settings.bullmqPool === undefined ? {} : { bullmqPool: settings.bullmqPool }),
  };
}

function printMeasurement(measurement: Measurement): void {
  const lines = [figureLine(measurement), ...measurement.notes.map((note) => `    ${note}`)];
  process.stdout.write(`${lines.join('\n')}\n`);
}

function figureLine(measurement: Measurement): string {
  const { records, seconds } = measurement.drain;
  return (
    `${measurement.label.padEnd(58)} ${String(records).padStart(7)} records in ` +
    `${seconds.toFixed(2).padStart(6)} s = ${formatRate(rate(measurement)).padStart(7)} records/s`
  );
}

/** Marks a figure that is not a full drain of every record: a subset, or a window closed by its time box. */
function scopeMark(settings: Settings, measurement: Measurement): string {
  const marks: string[] = [];
  if (measurement.available < settings.records) marks.push(`subset of ${measurement.available}`);
  if (!measurement.drain.complete) marks.push('time box');
  return marks.length > 0 ? `  [${marks.join(', ')}]` : '';
}

/** The fastest measurement of a variant (the limit runs once per loop count). */
function best(measurements: readonly Measurement[], variant: VariantId): Measurement | undefined {
  let found: Measurement | undefined;
  for (const measurement of measurements) {
    if (measurement.variant !== variant) continue;
    if (!found || rate(measurement) > rate(found)) found = measurement;
  }
  return found;
}

function printSummary(settings: Settings, measurements: readonly Measurement[]): void {
  const limit = best(measurements, 'c');
  const bullmq = best(measurements, 'd');
  const lines = ['', `summary (${settings.records} records; ratios against the best (c) and against (d)):`];
  for (const measurement of measurements) {
    const ratios = [ratioText(measurement, limit, '(c)'), ratioText(measurement, bullmq, '(d)')];
    lines.push(`${figureLine(measurement)}  ${ratios.join('  ')}${scopeMark(settings, measurement)}`);
  }
  lines.push(...goalLines(best(measurements, 'a'), limit, bullmq));
  const baton = best(measurements, 'a');
  const oneLoop = measurements.find((m) => m.variant === 'c' && m.loops === 1);
  if (baton && oneLoop && oneLoop !== limit) {
    lines.push(
      `for reference, (a) against the 1-loop limit (one batch in flight): ` +
        ratioText(baton, oneLoop, '(c, 1 loop)'),
    );
  }
  lines.push(formatMachine(describeMachine()));
  lines.push(
    `load average (1 min): ${settings.loadAtStart.toFixed(2)} at the start, ${loadAverage().toFixed(2)} now`,
  );
  process.stdout.write(`${lines.join('\n')}\n`);
}

function ratioText(measurement: Measurement, base: Measurement | undefined, name: string): string {
  if (!base || rate(base) === 0) return `${name}: n/a`;
  const ratio = rate(measurement) / rate(base);
  const text = ratio >= 10 ? ratio.toFixed(1) : ratio >= 0.1 ? ratio.toFixed(2) : ratio.toPrecision(2);
  return `${text} × ${name}`;
}

function goalLines(
  baton: Measurement | undefined,
  limit: Measurement | undefined,
  bullmq: Measurement | undefined,
): string[] {
  const goal = (text: string, base: Measurement | undefined, factor: number): string => {
    if (!baton || !base) return `goal ${text}: not measured in this run`;
    const needed = rate(base) * factor;
    const verdict = rate(baton) >= needed ? 'met' : 'not met';
    return `goal ${text}: ${formatRate(rate(baton))} vs ${formatRate(needed)} records/s needed → ${verdict}`;
  };
  return [
    goal(`(a) ≥ ${GOAL_OF_LIMIT} × (c)`, limit, GOAL_OF_LIMIT),
    goal(`(a) ≥ ${GOAL_OF_BULLMQ} × (d)`, bullmq, GOAL_OF_BULLMQ),
  ];
}

/** The closing line: records/s per variant, null for those not measured. */
function printJson(measurements: readonly Measurement[]): void {
  const figure = (variant: VariantId): number | null => {
    const measurement = best(measurements, variant);
    return measurement ? Math.round(rate(measurement)) : null;
  };
  const line = {
    bench: NAME,
    baton: figure('a'),
    baton_single: figure('b'),
    limit: figure('c'),
    bullmq: figure('d'),
    graphile_worker: figure('e'),
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
}
