// Claim and complete throughput of the Redis queue backend: an unordered queue (the baseline), then an
// ordered queue (ordering = "key") with its records spread over 10 000 keys, and with 10 hot keys (also with
// key_concurrency = 4), and over 10 000 keys with a key_rate_limit none reaches (the cost of keeping it). One
// consumer claims batches of 500 and completes them without failures (no handler, no sink transaction: the
// acknowledgement is the same one row per batch whatever the ordering). Run on the machine's Redis and
// PostgreSQL: node --import tsx bench/redis-keyed.ts [records]
import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';

import { createLogger } from '../src/log.js';
import type { QueueSettings } from '../src/queue/backend.js';
import { RedisQueueBackend } from '../src/queue/redis.js';
import { applyMigrations, builtinMigrations } from '../src/store/migrate.js';
import { openPostgresStore } from '../src/store/postgres.js';
import { createDatabase, deleteKeys, REDIS_URL } from './redis-pg.js';
import { formatMachine, describeMachine, formatRate } from './support.js';

const RECORDS = Number(process.argv[2] ?? 200_000);
const BATCH = 500;
const PUBLISH_CHUNK = 20_000;

interface Variant {
  readonly name: string;
  readonly settings: QueueSettings;
  /** The key of record `index`; undefined: published without keys. */
  readonly keyOf?: (index: number) => string;
}

const VARIANTS: readonly Variant[] = [
  { name: 'unordered', settings: { ordering: 'none', dedupWindowMs: 60_000 } },
  {
    name: 'ordered, 10k keys',
    settings: { ordering: 'key', dedupWindowMs: 60_000 },
    keyOf: (index) => `k${index % 10_000}`,
  },
  {
    name: 'ordered, 10 hot keys',
    settings: { ordering: 'key', dedupWindowMs: 60_000 },
    keyOf: (index) => `k${index % 10}`,
  },
  {
    name: '10 hot keys, key_conc. 4',
    settings: { ordering: 'key', dedupWindowMs: 60_000, keyConcurrency: 4 },
    keyOf: (index) => `k${index % 10}`,
  },
  {
    // A rate no key reaches: what keeping each key's time costs.
    name: '10k keys, key_rate_limit',
    settings: { ordering: 'key', dedupWindowMs: 60_000, keyRateLimit: 1_000_000 },
    keyOf: (index) => `k${index % 10_000}`,
  },
];

/** Rounds of the three variants, interleaved so that a change of the machine's load falls on all of them. */
const ROUNDS = 5;

/** Publishes RECORDS records to a fresh queue, then claims and completes them all; records per second. */
async function measure(backend: RedisQueueBackend, queue: string, variant: Variant): Promise<number> {
  backend.configure(queue, variant.settings);
  const payload = Buffer.alloc(60, 'x');
  for (let start = 0; start < RECORDS; start += PUBLISH_CHUNK) {
    const count = Math.min(PUBLISH_CHUNK, RECORDS - start);
    const records = Array.from({ length: count }, () => payload);
    const keys = variant.keyOf && Array.from({ length: count }, (_, index) => variant.keyOf!(start + index));
    await backend.publish(queue, records, keys ? { keys } : {});
  }
  const started = performance.now();
  let claimed = 0;
  for (;;) {
    const batch = await backend.claim(queue, `${queue}-consumer`, BATCH);
    if (!batch) break;
    claimed += batch.records.length;
    await backend.complete(batch, []);
  }
  if (claimed !== RECORDS) throw new Error(`${variant.name}: claimed ${claimed} of ${RECORDS}`);
  return claimed / ((performance.now() - started) / 1000);
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const log = createLogger({ level: 'warn' });
  const database = await createDatabase();
  const store = await openPostgresStore(
    { kind: 'postgres', url: database.url, poolSize: 2, statementTimeoutMs: 0 },
    { log, startupTimeoutMs: 5000 },
  );
  const redis = new Redis(REDIS_URL);
  const prefix = `bench-keyed-${randomBytes(4).toString('hex')}`;
  const backend = new RedisQueueBackend({ url: REDIS_URL, store, log });
  try {
    await applyMigrations(store, await builtinMigrations());
    await backend.start({ checkPersistence: false });
    console.log(`claim + complete, batches of ${BATCH}, ${RECORDS} records, median of ${ROUNDS} rounds`);
    console.log(formatMachine(describeMachine()));
    const rates = new Map<string, number[]>(VARIANTS.map((variant) => [variant.name, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const variant of VARIANTS) {
        const queue = `${prefix}-${round}-${variant.name.replace(/\W+/g, '-')}`;
        rates.get(variant.name)!.push(await measure(backend, queue, variant));
        await deleteKeys(redis, `${queue}*`);
      }
    }
    const baseline = median(rates.get(VARIANTS[0]!.name)!);
    for (const variant of VARIANTS) {
      const rate = median(rates.get(variant.name)!);
      console.log(
        `${variant.name.padEnd(26)} ${formatRate(rate).padStart(10)} records/s  ` +
          `${((BATCH / rate) * 1000).toFixed(2)} ms per claim+complete  ${(rate / baseline).toFixed(2)}× unordered`,
      );
    }
  } finally {
    await backend.close();
    await deleteKeys(redis, `${prefix}*`);
    redis.disconnect();
    await store.close();
    await database.drop();
  }
}

await main();
