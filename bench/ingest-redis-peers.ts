// The comparison variants of the ingest-redis benchmark, run in this process: (c) the hand-written limit
// (RPOP 500, one unnest INSERT per batch; no crash safety), (d) BullMQ with one INSERT per job and
// (e) graphile-worker with one INSERT per job. Each gets the same records and is timed like the node.
import type { Job } from 'bullmq';
import { Queue, Worker } from 'bullmq';
import type { JobHelpers } from 'graphile-worker';
import { Logger, makeWorkerUtils, run } from 'graphile-worker';
import type { Redis } from 'ioredis';
import type pg from 'pg';

import type { Measurement, VariantContext } from './ingest-redis-variant.js';
import { boxNote, measureWindow, withFixtures } from './ingest-redis-variant.js';
import type { Ping } from './redis-pg.js';
import { createPingTable, makePool, parsePing, pushRecords, redisClient, toPing } from './redis-pg.js';
import { LOOPBACK, now } from './support.js';

const INSERT_ONE = 'INSERT INTO ping (name, timestamp) VALUES ($1, $2)';
const INSERT_MANY = 'INSERT INTO ping (name, timestamp) SELECT * FROM unnest($1::text[], $2::timestamptz[])';
const LIMIT_BATCH = 500;
const BULLMQ_CONCURRENCY = 50;
const BULLMQ_ADD_CHUNK = 1000;
const GRAPHILE_CONCURRENCY = 10;
const GRAPHILE_POOL = 10;
const GRAPHILE_ADD_CHUNK = 10_000;

/** (c) `loops` loops of RPOP 500 → one INSERT … unnest (its own transaction) on a pool of `loops`. */
export function runLimit(ctx: VariantContext, loops: number): Promise<Measurement> {
  return withFixtures(ctx, `c${loops}`, async ({ db, keyPrefix }) => {
    const key = `${keyPrefix}:ping`;
    await createPingTable(db.url);
    const pushSeconds = await pushRecords(ctx.redis, key, ctx.records);
    const pool = makePool(db.url, loops);
    const consumer = redisClient();
    try {
      await warmPool(pool, loops);
      const { drain, cpu } = await measureWindow(ctx, db.url, undefined, {
        target: ctx.records.length,
        timeBoxMs: undefined,
        start: () => Promise.all(Array.from({ length: loops }, () => limitLoop(consumer, pool, key))),
      });
      return {
        variant: 'c',
        loops,
        label: `(c) limit: RPOP ${LIMIT_BATCH} + 1 INSERT unnest, ${loops} loop${loops > 1 ? 's' : ''}`,
        drain,
        available: ctx.records.length,
        notes: [
          `pushed in ${pushSeconds.toFixed(2)} s; no crash safety (a popped batch dies with the process)`,
          cpu,
        ],
      };
    } finally {
      consumer.disconnect();
      await pool.end();
    }
  });
}

async function limitLoop(redis: Redis, pool: pg.Pool, key: string): Promise<void> {
  for (;;) {
    const batch = await redis.rpopBuffer(key, LIMIT_BATCH);
    if (batch === null || batch.length === 0) return;
    const names: string[] = [];
    const timestamps: string[] = [];
    for (const record of batch) {
      const ping = parsePing(record);
      names.push(ping.name);
      timestamps.push(ping.timestamp);
    }
    await pool.query(INSERT_MANY, [names, timestamps]);
  }
}

/** Opens `size` connections before the window, so that no variant pays for connecting inside it. */
async function warmPool(pool: pg.Pool, size: number): Promise<void> {
  const clients = await Promise.all(Array.from({ length: size }, () => pool.connect()));
  for (const client of clients) client.release();
}

export interface PeerOptions {
  readonly timeBoxMs: number;
  /** Connections of the pool the BullMQ processor inserts through. */
  readonly bullmqPool?: number;
}

/** (d) BullMQ: jobs added with addBulk first (not timed), then a Worker at concurrency 50 drains them. */
export function runBullmq(ctx: VariantContext, options: PeerOptions): Promise<Measurement> {
  return withFixtures(ctx, 'd', async ({ db, keyPrefix }) => {
    await createPingTable(db.url);
    const connection = { host: LOOPBACK, port: 6379 };
    const queue = new Queue<Ping>('ping', { connection, prefix: keyPrefix });
    const poolSize = options.bullmqPool ?? BULLMQ_CONCURRENCY;
    const pool = makePool(db.url, poolSize);
    const processor = async (job: Job<Ping>): Promise<void> => {
      await pool.query(INSERT_ONE, [job.data.name, job.data.timestamp]);
    };
    const worker = new Worker<Ping>('ping', processor, {
      connection,
      prefix: keyPrefix,
      concurrency: BULLMQ_CONCURRENCY,
      autorun: false,
    });
    worker.on('error', (error) => process.stderr.write(`bullmq worker: ${error.message}\n`));
    try {
      const addSeconds = await addBullmqJobs(queue, ctx.pings);
      await worker.waitUntilReady();
      await warmPool(pool, poolSize);
      const { drain, cpu } = await measureWindow(ctx, db.url, undefined, {
        target: ctx.pings.length,
        timeBoxMs: options.timeBoxMs,
        start: () => worker.run(),
      });
      return {
        variant: 'd',
        label: `(d) BullMQ, concurrency ${BULLMQ_CONCURRENCY}, 1 INSERT per job`,
        drain,
        available: ctx.pings.length,
        notes: [
          `BullMQ Worker in the bench process, removeOnComplete: true, pg pool of ${poolSize}; ` +
            `addBulk (${BULLMQ_ADD_CHUNK} per call) took ${addSeconds.toFixed(2)} s`,
          ...boxNote(drain, ctx.pings.length),
          cpu,
        ],
      };
    } finally {
      await worker.close();
      await queue.obliterate({ force: true }).catch(() => undefined);
      await queue.close();
      await pool.end();
    }
  });
}

async function addBullmqJobs(queue: Queue<Ping>, pings: readonly Ping[]): Promise<number> {
  const started = now();
  for (let start = 0; start < pings.length; start += BULLMQ_ADD_CHUNK) {
    const jobs = pings
      .slice(start, start + BULLMQ_ADD_CHUNK)
      .map((data) => ({ name: 'ping', data, opts: { removeOnComplete: true } }));
    await queue.addBulk(jobs);
  }
  return (now() - started) / 1000;
}

/** (e) graphile-worker: jobs added with addJobs first (not timed), then run() at concurrency 10 drains them. */
export function runGraphile(ctx: VariantContext, options: PeerOptions): Promise<Measurement> {
  return withFixtures(ctx, 'e', async ({ db }) => {
    await createPingTable(db.url);
    const logger = quietLogger();
    // graphile-worker's default: a pool of 10 (maxPoolSize); given here so that its errors are handled.
    const pgPool = makePool(db.url, GRAPHILE_POOL);
    try {
      const addSeconds = await addGraphileJobs(pgPool, logger, ctx.pings);
      const fixtures = { url: db.url, pgPool, logger, timeBoxMs: options.timeBoxMs };
      return await drainGraphile(ctx, fixtures, addSeconds);
    } finally {
      await pgPool.end();
    }
  });
}

async function drainGraphile(
  ctx: VariantContext,
  fixtures: { url: string; pgPool: pg.Pool; logger: Logger; timeBoxMs: number },
  addSeconds: number,
): Promise<Measurement> {
  const runner = await run({
    pgPool: fixtures.pgPool,
    concurrency: GRAPHILE_CONCURRENCY,
    noHandleSignals: true,
    logger: fixtures.logger,
    taskList: { ping: insertPingTask },
  });
  try {
    const { drain, cpu } = await measureWindow(ctx, fixtures.url, undefined, {
      target: ctx.pings.length,
      timeBoxMs: fixtures.timeBoxMs,
      start: () => runner.promise,
    });
    return {
      variant: 'e',
      label: `(e) graphile-worker, concurrency ${GRAPHILE_CONCURRENCY}, 1 INSERT per job`,
      drain,
      available: ctx.pings.length,
      notes: [
        `graphile-worker run() in the bench process, pool of ${GRAPHILE_POOL} (its default), ` +
          `INSERT through helpers.query; addJobs (${GRAPHILE_ADD_CHUNK} per call) took ${addSeconds.toFixed(2)} s`,
        ...boxNote(drain, ctx.pings.length),
        cpu,
      ],
    };
  } finally {
    await runner.stop();
  }
}

async function insertPingTask(payload: unknown, helpers: JobHelpers): Promise<void> {
  const ping = toPing(payload);
  await helpers.query(INSERT_ONE, [ping.name, ping.timestamp]);
}

async function addGraphileJobs(pgPool: pg.Pool, logger: Logger, pings: readonly Ping[]): Promise<number> {
  const utils = await makeWorkerUtils({ pgPool, logger });
  try {
    await utils.migrate();
    const started = now();
    for (let start = 0; start < pings.length; start += GRAPHILE_ADD_CHUNK) {
      const specs = pings
        .slice(start, start + GRAPHILE_ADD_CHUNK)
        .map((ping) => ({ identifier: 'ping', payload: ping }));
      await utils.addJobs(specs);
    }
    return (now() - started) / 1000;
  } finally {
    await utils.release();
  }
}

/** graphile-worker logs every completed job at info by default; only warnings and errors are kept. */
function quietLogger(): Logger {
  return new Logger(() => (level, message) => {
    const text: string = level;
    if (text === 'error' || text === 'warning') process.stderr.write(`graphile-worker ${text}: ${message}\n`);
  });
}
