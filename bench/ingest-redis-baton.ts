// The Baton variants of the ingest-redis benchmark: records are LPUSHed to the queue's list first, then a node
// (`node bin/baton.js -c <config> run`, quickstart handler, PostgreSQL store, Redis queue) is started and its
// drain is timed from the moment it answers ready until `ping` holds the records.
import { mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';

import type { Redis } from 'ioredis';

import type { Fixtures, Measurement, VariantContext, VariantId } from './ingest-redis-variant.js';
import { boxNote, cleanup, measureWindow, withFixtures } from './ingest-redis-variant.js';
import { deleteKeys, pushRecords, REDIS_URL } from './redis-pg.js';
import type { NodeChild } from './support.js';
import { freePort, ROOT, startNodeChild, stopNodeChild, waitForReady } from './support.js';

const HANDLER = join(ROOT, 'examples', 'quickstart', 'handlers', 'ping.ts');
const QUEUE = 'ping';
/** The keys Baton keeps a queue's failed records in; not under the queue's key (Azafea's names). */
const ERROR_KEYS = [`errors-${QUEUE}`, `errors-${QUEUE}:ids`, `errors-${QUEUE}:meta`, `errors-${QUEUE}:seq`];

export interface BatonVariant {
  readonly variant: VariantId;
  readonly label: string;
  /** TOML lines added to the queue's table, e.g. `batch_size = 1`. */
  readonly queueToml: string;
  /** The records pushed: all of them, or a subset. */
  readonly records: readonly Buffer[];
  readonly timeBoxMs: number | undefined;
  readonly notes: readonly string[];
  /** Options for the node's `node` (a CPU profile). */
  readonly nodeArgs: readonly string[];
}

export function runBaton(ctx: VariantContext, variant: BatonVariant): Promise<Measurement> {
  return withFixtures(ctx, variant.variant, async (fixtures) => {
    const key = `${fixtures.keyPrefix}:${QUEUE}`;
    const foreignErrorKeys = await existingKeys(ctx.redis, ERROR_KEYS);
    const pushSeconds = await pushRecords(ctx.redis, key, variant.records);
    const dir = await mkdtemp(join(ctx.tmp, `node-${variant.variant}-`));
    const child = await startNodeChild({
      dir,
      port: await freePort(),
      extraToml: storeAndRedis(fixtures),
      queues: [{ name: QUEUE, handler: HANDLER, extra: queueTable(key, variant.queueToml) }],
      nodeArgs: variant.nodeArgs,
    });
    try {
      return await drainWithNode(ctx, variant, fixtures, child, key, pushSeconds);
    } finally {
      await stopAndClean(ctx.redis, child, foreignErrorKeys);
    }
  });
}

async function drainWithNode(
  ctx: VariantContext,
  variant: BatonVariant,
  fixtures: Fixtures,
  child: NodeChild,
  key: string,
  pushSeconds: number,
): Promise<Measurement> {
  const started = performance.now();
  await waitForReady(child, ctx.deadline);
  const startupSeconds = (performance.now() - started) / 1000;
  const available = variant.records.length;
  const { drain, cpu } = await measureWindow(ctx, fixtures.db.url, child.process.pid, {
    target: available,
    timeBoxMs: variant.timeBoxMs,
  });
  const left = await ctx.redis.llen(key);
  const errors = await ctx.redis.llen(ERROR_KEYS[0] ?? '');
  const [from, to] = drain.windowUs;
  return {
    variant: variant.variant,
    label:
      batonEnvironment().length > 0
        ? `${variant.label.replace(/,.*$/, '')}, config overridden by the environment`
        : variant.label,
    drain,
    available,
    notes: [
      ...variant.notes,
      ...batonEnvironment(),
      `pushed ${available.toLocaleString('en-US')} records in ${pushSeconds.toFixed(2)} s; node ready ` +
        `${startupSeconds.toFixed(2)} s after spawn, ${drain.storedBefore} rows already stored then`,
      ...boxNote(drain, available),
      `after the window: ${left} records left in the list, ${errors} in ${ERROR_KEYS[0] ?? ''}`,
      cpu,
      ...(variant.nodeArgs.length > 0 ? [`cpu profile window: --from ${from} --to ${to}`] : []),
    ],
  };
}

/** BATON_… variables reach the child and override its config: a run with any says so. */
function batonEnvironment(): string[] {
  const set = Object.entries(process.env).filter(([name, value]) => name.startsWith('BATON_') && value);
  if (set.length === 0) return [];
  return [
    `config overridden by the environment: ${set.map(([name, value]) => `${name}=${value}`).join(' ')}`,
  ];
}

function storeAndRedis(fixtures: Fixtures): string {
  return [
    '[store]',
    `url = ${JSON.stringify(fixtures.db.url)}`,
    '',
    '[redis]',
    `url = ${JSON.stringify(REDIS_URL)}`,
  ].join('\n');
}

function queueTable(key: string, extra: string): string {
  return ['backend = "redis"', `key = ${JSON.stringify(key)}`, ...(extra ? [extra] : [])].join('\n');
}

async function existingKeys(redis: Redis, keys: readonly string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (const key of keys) if ((await redis.exists(key)) > 0) found.add(key);
  return found;
}

/**
 * Stops the node (its output is printed when it did not exit cleanly), then deletes what it left outside
 * the variant's key prefix: its consumer key, and error keys that did not exist before it ran.
 */
async function stopAndClean(redis: Redis, child: NodeChild, foreignErrorKeys: Set<string>): Promise<void> {
  const exit = await stopNodeChild(child);
  if (exit !== '0') process.stdout.write(`node exited with ${exit}:\n${child.output()}\n`);
  const pid = child.process.pid;
  if (pid !== undefined) {
    await cleanup('the node consumer key', () => deleteKeys(redis, `baton:consumer:bench:${pid}:*`));
  }
  const created = ERROR_KEYS.filter((key) => !foreignErrorKeys.has(key));
  if (created.length > 0) await cleanup('error keys', () => redis.unlink(...created));
}
