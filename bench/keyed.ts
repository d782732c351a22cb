// Ordered queues against unordered ones, end to end on a node in this process: the same records preloaded
// into a queue with ordering "none", into one with ordering "key" spread over 10 000 keys, and into one with 10
// hot keys, then drained by a handler that inserts each record into a table; records/s from the first claim to
// the completion of the last batch. `--layout interleaved` (the default) publishes the keys in turn (k0, k1, …,
// k0, k1, …), `--layout grouped` each key's records together, as a producer sending per key would. On the store
// queue (a fresh PostgreSQL database, no statistics at the start) and on Redis (a PostgreSQL sink); the three
// variants interleaved over several rounds, medians kept.
import { join } from 'node:path';
import os from 'node:os';

import { sql } from 'drizzle-orm';
import type { Redis } from 'ioredis';

import type { BatonNode, ConfigInput } from '../src/index.js';
import { startNode } from '../src/index.js';
import type { Logger } from '../src/log.js';
import { createLogger } from '../src/log.js';
import type { QueueSettings } from '../src/queue/backend.js';
import { RedisQueueBackend } from '../src/queue/redis.js';
import { claimKeyedStatement } from '../src/queue/store-keys.js';
import { claimStatement, StoreQueueBackend } from '../src/queue/store-queue.js';
import { applyMigrations, builtinMigrations } from '../src/store/migrate.js';
import { openPostgresStore } from '../src/store/postgres.js';
import type { Store } from '../src/store/store.js';
import { executeIn } from '../src/store/store.js';
import type { ClaimSample } from './keyed-probe.js';
import { median, observe, Probe } from './keyed-probe.js';
import { cleanup } from './ingest-redis-variant.js';
import { connect, createDatabase, deleteKeys, randomSuffix, REDIS_URL, redisClient } from './redis-pg.js';
import type { Deadline } from './support.js';
import {
  formatRate,
  integerOption,
  now,
  LOOPBACK,
  machineAndLoad,
  parseOptions,
  ROOT,
  runMeasured,
  UsageError,
} from './support.js';

const NAME = 'keyed';
const OPTIONS = [
  'records',
  'batch',
  'concurrency',
  'rounds',
  'backends',
  'layout',
  'explain',
  'timeout-s',
] as const;
const HANDLER = join(ROOT, 'bench', 'keyed-fixtures', 'sink-handler.ts');
/** The goal of the issue: keyed ≥ 0.8 × unkeyed. */
const GOAL = 0.8;
/** Records per publish while preloading. */
const PRELOAD_CHUNK = 10_000;
/** The keys of the records of the unkeyed variant's payloads too, so that all three carry the same bytes. */
const PAYLOAD_KEYS = 10_000;

type BackendKind = 'store' | 'redis';
type Layout = 'interleaved' | 'grouped';
const BACKENDS: readonly BackendKind[] = ['store', 'redis'];

type VariantId = 'unkeyed' | 'keyed' | 'hot';

interface Variant {
  readonly id: VariantId;
  readonly label: string;
  /** Distinct keys of the records; undefined: published without keys to an unordered queue. */
  readonly keys: number | undefined;
}

const VARIANTS: readonly Variant[] = [
  { id: 'unkeyed', label: 'unkeyed', keys: undefined },
  { id: 'keyed', label: 'keyed, 10k keys', keys: 10_000 },
  { id: 'hot', label: 'keyed, 10 hot keys', keys: 10 },
];

interface Settings {
  readonly records: number;
  readonly batch: number;
  readonly concurrency: number;
  readonly rounds: number;
  readonly backends: readonly BackendKind[];
  /** How the records of the keys follow each other in the preload. */
  readonly layout: Layout;
  /** Prints the plan of the first claim of each store variant (EXPLAIN ANALYZE at the full backlog). */
  readonly explain: boolean;
  readonly timeoutS: number;
}

/** One measured drain. */
interface Run {
  readonly backend: BackendKind;
  readonly variant: VariantId;
  readonly round: number;
  readonly rate: number;
  readonly seconds: number;
  readonly claims: readonly ClaimSample[];
  readonly held: number;
  /** Records given back unprocessed during the window (batches that lost their claim). */
  readonly released: number;
  /** Seconds the preload's publishes took (not in the window). */
  readonly publishS: number;
  /** Store only: the execution time of the first claim, explained at the full backlog before the node started. */
  readonly explainMs: number | undefined;
  /** Rows of a key stored after a row of the same key with a higher sequence number (0 for ordered queues). */
  readonly outOfOrder: number;
}

interface Report {
  readonly load: readonly number[];
  readonly runs: Run[];
}

export async function main(args: readonly string[]): Promise<number> {
  const settings = readSettings(args);
  process.stdout.write(machineAndLoad());
  process.stdout.write(
    `${NAME}: ${settings.records} records preloaded per drain, batch_size ${settings.batch}, concurrency ` +
      `${settings.concurrency}, ${settings.layout} layout, ${settings.rounds} rounds of the three variants (order rotated each round)\n`,
  );
  const redis = redisClient();
  const log = createLogger({ level: 'error' });
  try {
    return await runMeasured<Report>({
      timeoutS: settings.timeoutS,
      tmpPrefix: 'baton-bench-keyed-',
      report: { load: os.loadavg().map(round2), runs: [] },
      measure: async (report, parent, deadline) => {
        for (let round = 0; round < settings.rounds; round++) {
          for (const backend of rotated(settings.backends, round)) {
            for (const variant of rotated(VARIANTS, round)) {
              const run = await measureRun({
                settings,
                backend,
                variant,
                round,
                parent,
                deadline,
                redis,
                log,
              });
              report.runs.push(run);
              process.stdout.write(`${describeRun(run)}\n`);
            }
          }
        }
      },
      print: (report) => printSummary(settings, report),
      printJson: (report) => {
        for (const backend of settings.backends) {
          const rate = (variant: VariantId): number => medianRate(report, backend, variant);
          const unkeyed = rate('unkeyed');
          process.stdout.write(
            `${JSON.stringify({
              bench: NAME,
              backend,
              keyed: Math.round(rate('keyed')),
              unkeyed: Math.round(unkeyed),
              hot_keys: Math.round(rate('hot')),
              keyed_ratio: round2(rate('keyed') / unkeyed),
              hot_ratio: round2(rate('hot') / unkeyed),
              records: settings.records,
              batch_size: settings.batch,
              concurrency: settings.concurrency,
              layout: settings.layout,
              rounds: settings.rounds,
              load_at_start: report.load,
            })}\n`,
          );
        }
      },
    });
  } finally {
    redis.disconnect();
  }
}

function readSettings(args: readonly string[]): Settings {
  const options = parseOptions(args, OPTIONS);
  const backends = (options.get('backends') ?? BACKENDS.join(',')).split(',');
  for (const backend of backends) {
    if (!BACKENDS.includes(backend as BackendKind))
      throw new UsageError(`--backends: unknown backend ${backend}`);
  }
  const layout = options.get('layout') ?? 'interleaved';
  if (layout !== 'interleaved' && layout !== 'grouped')
    throw new UsageError('--layout expects interleaved or grouped');
  const explain = options.get('explain') ?? 'no';
  if (explain !== 'yes' && explain !== 'no') throw new UsageError('--explain expects yes or no');
  return {
    records: integerOption(options, 'records', 200_000),
    batch: integerOption(options, 'batch', 500),
    concurrency: integerOption(options, 'concurrency', 4),
    rounds: integerOption(options, 'rounds', 3),
    backends: backends as BackendKind[],
    layout,
    explain: explain === 'yes',
    timeoutS: integerOption(options, 'timeout-s', 3_600),
  };
}

/** `items` starting at index `by` (mod its length): each round starts with another variant. */
function rotated<T>(items: readonly T[], by: number): T[] {
  const start = by % items.length;
  return [...items.slice(start), ...items.slice(0, start)];
}

interface RunContext {
  readonly settings: Settings;
  readonly backend: BackendKind;
  readonly variant: Variant;
  readonly round: number;
  readonly parent: string;
  readonly deadline: Deadline;
  readonly redis: Redis;
  readonly log: Logger;
}

/**
 * One drain on a fresh database (and fresh Redis keys): preloads the records, starts a node whose queue
 * holds them, and times its drain from inside (keyed-probe.ts); then checks every record was stored, each
 * key's in publish order on an ordered queue.
 */
async function measureRun(ctx: RunContext): Promise<Run> {
  const database = await createDatabase();
  const tag = randomSuffix().slice(0, 8);
  const names = { queue: `keyed-${tag}`, node: `bench-keyed-${tag}`, redisKey: `bench-keyed-${tag}:q` };
  try {
    const { publishS, explainMs } = await preload(ctx, database.url, names);
    const probe = new Probe(ctx.settings.records);
    const restore = observe(probe);
    let node: BatonNode | undefined;
    try {
      node = await startNode(nodeConfig(ctx, database.url, names), { log: ctx.log });
      await probe.finished(ctx.deadline);
    } finally {
      restore();
      await node?.stop();
    }
    const outOfOrder = await checkStored(database.url, ctx);
    return {
      backend: ctx.backend,
      variant: ctx.variant.id,
      round: ctx.round,
      rate: ctx.settings.records / probe.seconds,
      seconds: probe.seconds,
      claims: probe.claims,
      held: probe.held,
      released: probe.released,
      publishS,
      explainMs,
      outOfOrder,
    };
  } finally {
    await cleanup(`database ${database.name}`, () => database.drop());
    await cleanup('Redis keys', async () => {
      await deleteKeys(ctx.redis, `bench-keyed-${tag}:*`);
      await deleteKeys(ctx.redis, `errors-${names.queue}*`);
      await deleteKeys(ctx.redis, `baton:consumer:${names.node}:*`);
    });
  }
}

interface Names {
  readonly queue: string;
  readonly node: string;
  readonly redisKey: string;
}

function queueSettings(variant: Variant): QueueSettings {
  return { ordering: variant.keys === undefined ? 'none' : 'key', dedupWindowMs: 86_400_000 };
}

/** Record `index` of a variant: its payload and, on an ordered queue, its key. */
function recordKey(settings: Settings, variant: Variant, index: number): string {
  const keys = variant.keys ?? PAYLOAD_KEYS;
  if (settings.layout === 'interleaved') return `k${index % keys}`;
  return `k${Math.min(keys - 1, Math.floor(index / Math.ceil(settings.records / keys)))}`;
}

/**
 * Applies Baton's migrations and publishes the records through the queue backend the node will use, in
 * chunks, keys given per record; on the store, explains a first claim of a batch at the full backlog (rolled
 * back). Returns how long the publishes took and the explained claim's execution time.
 */
async function preload(
  ctx: RunContext,
  url: string,
  names: Names,
): Promise<{ publishS: number; explainMs: number | undefined }> {
  const store = await openPostgresStore(
    { kind: 'postgres', url, poolSize: 2, statementTimeoutMs: 0 },
    { log: ctx.log, startupTimeoutMs: 10_000 },
  );
  let publishS = 0;
  try {
    await applyMigrations(store, await builtinMigrations());
    const backend =
      ctx.backend === 'store'
        ? new StoreQueueBackend(store, ctx.log)
        : new RedisQueueBackend({
            url: REDIS_URL,
            store,
            log: ctx.log,
            keys: { [names.queue]: names.redisKey },
          });
    try {
      if (backend instanceof RedisQueueBackend) await backend.start({ checkPersistence: false });
      backend.configure(names.queue, queueSettings(ctx.variant));
      const { records, variant } = { records: ctx.settings.records, variant: ctx.variant };
      const started = now();
      for (let start = 0; start < records; start += PRELOAD_CHUNK) {
        const indexes = Array.from({ length: Math.min(PRELOAD_CHUNK, records - start) }, (_, i) => start + i);
        const payloads = indexes.map((index) =>
          Buffer.from(
            JSON.stringify({
              key: recordKey(ctx.settings, variant, index),
              seq: index,
              note: 'bench-keyed-record',
            }),
          ),
        );
        const keys =
          variant.keys === undefined
            ? undefined
            : indexes.map((index) => recordKey(ctx.settings, variant, index));
        await backend.publish(names.queue, payloads, keys ? { keys } : {});
      }
      publishS = (now() - started) / 1000;
    } finally {
      await backend.close();
    }
    const explainMs = ctx.backend === 'store' ? await explainClaim(store, names.queue, ctx) : undefined;
    return { publishS, explainMs };
  } finally {
    await store.close();
  }
}

/** Thrown to roll back the explained claim. */
class RolledBack extends Error {}

/** EXPLAIN (ANALYZE, BUFFERS) of the claim the node's first consumer runs, in a transaction rolled back. */
async function explainClaim(store: Store, queue: string, ctx: RunContext): Promise<number | undefined> {
  const options = { batchId: undefined };
  const claim =
    ctx.variant.keys === undefined
      ? claimStatement(queue, 'bench-explain', ctx.settings.batch, options)
      : claimKeyedStatement(queue, 'bench-explain', ctx.settings.batch, {
          ...options,
          settings: queueSettings(ctx.variant),
        });
  let plan: string[] = [];
  await store
    .transaction(async (tx) => {
      const rows = await executeIn(tx, sql`EXPLAIN (ANALYZE, BUFFERS) ${claim}`);
      plan = rows.map((row) => String(row['QUERY PLAN']));
      throw new RolledBack();
    })
    .catch((error: unknown) => {
      if (!(error instanceof RolledBack)) throw error;
    });
  if (ctx.settings.explain && ctx.round === 0) {
    process.stdout.write(`  plan of the first claim, store, ${ctx.variant.label}:\n`);
    for (const line of plan) process.stdout.write(`    ${line}\n`);
  }
  const match = plan.map((line) => /^Execution Time: ([\d.]+) ms/.exec(line)).find(Boolean);
  return match ? Number(match[1]) : undefined;
}

function nodeConfig(ctx: RunContext, url: string, names: Names): ConfigInput {
  const { settings, variant } = ctx;
  return {
    node: { name: names.node, data_dir: join(ctx.parent, names.node), shutdown_timeout_ms: 10_000 },
    // Warnings of the machine's setup (Redis without appendfsync always) would be repeated at every run.
    log: { level: 'error' },
    http: { host: LOOPBACK, port: 0 },
    store: { url },
    redis: { url: REDIS_URL },
    queues: {
      [names.queue]: {
        handler: HANDLER,
        ordering: queueSettings(variant).ordering,
        batch_size: settings.batch,
        concurrency: settings.concurrency,
        ...(ctx.backend === 'redis' ? { backend: 'redis', key: names.redisKey } : {}),
      },
    },
  };
}

/** Checks that every record was stored once; returns the rows stored out of their key's order. */
async function checkStored(url: string, ctx: RunContext): Promise<number> {
  const db = await connect(url);
  try {
    const { rows } = await db.query<{ n: number; out_of_order: number }>(`
      SELECT count(*)::int AS n, count(*) FILTER (WHERE back)::int AS out_of_order
      FROM (SELECT seq < lag(seq) OVER (PARTITION BY key ORDER BY id) AS back FROM keyed_sink) AS rows`);
    const { n = 0, out_of_order: outOfOrder = 0 } = rows[0] ?? {};
    if (n !== ctx.settings.records)
      throw new Error(`${ctx.variant.label}: ${n} of ${ctx.settings.records} stored`);
    if (ctx.variant.keys !== undefined && outOfOrder > 0) {
      throw new Error(`${ctx.variant.label}: ${outOfOrder} records stored out of their key's order`);
    }
    return outOfOrder;
  } finally {
    await db.end();
  }
}

/** What a run's claims were like: their number, the empty ones, records per claim, latency early and late. */
function claimFigures(claims: readonly ClaimSample[]): {
  count: number;
  empty: number;
  perClaim: number;
  p50: number;
  firstP50: number;
  lastP50: number;
} {
  const full = claims.filter((claim) => claim.records > 0);
  const fifth = Math.max(1, Math.floor(full.length / 5));
  return {
    count: claims.length,
    empty: claims.length - full.length,
    perClaim: full.reduce((sum, claim) => sum + claim.records, 0) / Math.max(1, full.length),
    p50: median(full.map((claim) => claim.ms)),
    firstP50: median(full.slice(0, fifth).map((claim) => claim.ms)),
    lastP50: median(full.slice(-fifth).map((claim) => claim.ms)),
  };
}

function describeRun(run: Run): string {
  const claims = claimFigures(run.claims);
  const label = VARIANTS.find((variant) => variant.id === run.variant)?.label ?? run.variant;
  return [
    `  round ${run.round + 1}  ${run.backend.padEnd(5)}  ${label.padEnd(18)} ${formatRate(run.rate).padStart(8)} records/s`,
    `  window ${run.seconds.toFixed(2)} s (published in ${run.publishS.toFixed(1)} s before); ${claims.count} claims (${claims.empty} empty), ${claims.perClaim.toFixed(0)} records per claim,`,
    `claim p50 ${claims.p50.toFixed(1)} ms (first fifth ${claims.firstP50.toFixed(1)}, last fifth ${claims.lastP50.toFixed(1)});`,
    `batches held ${run.held.toFixed(2)} on average`,
    ...(run.released > 0 ? [`; ${run.released} records given back unprocessed`] : []),
    ...(run.explainMs === undefined ? [] : [`; explained first claim ${run.explainMs.toFixed(1)} ms`]),
    ...(run.variant === 'unkeyed' ? [`; ${run.outOfOrder} rows out of key order`] : []),
  ].join(' ');
}

function runsOf(report: Report, backend: BackendKind, variant: VariantId): Run[] {
  return report.runs.filter((run) => run.backend === backend && run.variant === variant);
}

function medianRate(report: Report, backend: BackendKind, variant: VariantId): number {
  return median(runsOf(report, backend, variant).map((run) => run.rate));
}

function printSummary(settings: Settings, report: Report): void {
  process.stdout.write(
    `\n${NAME}: medians of ${settings.rounds} rounds (goal: keyed >= ${GOAL} x unkeyed)\n`,
  );
  for (const backend of settings.backends) {
    const unkeyed = medianRate(report, backend, 'unkeyed');
    process.stdout.write(`  ${backend}:\n`);
    for (const variant of VARIANTS) {
      const runs = runsOf(report, backend, variant.id);
      if (runs.length === 0) continue;
      const rate = medianRate(report, backend, variant.id);
      const claims = runs.map((run) => claimFigures(run.claims));
      const short = variant.keys !== undefined && rate / unkeyed < GOAL ? ' (BELOW THE GOAL)' : '';
      process.stdout.write(
        `    ${variant.label.padEnd(18)} ${formatRate(rate).padStart(8)} records/s  ${(rate / unkeyed).toFixed(2)} x unkeyed${short};` +
          ` ${median(claims.map((claim) => claim.perClaim)).toFixed(0)} records per claim,` +
          ` ${median(claims.map((claim) => claim.empty))} empty claims, claim p50 ${median(claims.map((claim) => claim.p50)).toFixed(1)} ms,` +
          ` batches held ${median(runs.map((run) => run.held)).toFixed(2)};` +
          ` preload published at ${formatRate(median(runs.map((run) => settings.records / run.publishS)))} records/s\n`,
      );
    }
  }
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}
