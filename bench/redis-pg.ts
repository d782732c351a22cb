// Fixtures of the benchmarks that run on the machine's Redis and PostgreSQL servers: a fresh database per
// measured variant (dropped afterwards), a Redis key prefix per run (its keys deleted afterwards), the
// quickstart records pushed to a list, and the watch that times a drain by polling `count(*)` of `ping`.
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';

import { Redis } from 'ioredis';
import pg from 'pg';

import { LOOPBACK, monotonicMicros, now, pause, processCpuSeconds } from './support.js';

export const REDIS_URL = `redis://${LOOPBACK}:6379`;
const POSTGRES_ADMIN_URL = `postgres://postgres@${LOOPBACK}:5432/postgres`;
/** Records per LPUSH, and LPUSHes per pipeline round trip. */
const PUSH_CHUNK = 1000;
const PUSH_PIPELINE = 20;

/** The quickstart handler's table, as its drizzle schema creates it. */
export const PING_TABLE = `CREATE TABLE ping (
  id serial PRIMARY KEY,
  name text NOT NULL,
  timestamp timestamptz NOT NULL
)`;

export interface Ping {
  readonly name: string;
  readonly timestamp: string;
}

/** Records like `{"name":"bench-000042","timestamp":"2025-01-01T00:00:00.042Z"}` (~60 bytes). */
export function makePings(count: number): Ping[] {
  const origin = Date.UTC(2025, 0, 1);
  const pings: Ping[] = [];
  for (let index = 0; index < count; index++) {
    pings.push({
      name: `bench-${String(index).padStart(6, '0')}`,
      timestamp: new Date(origin + index).toISOString(),
    });
  }
  return pings;
}

/** A pushed record read back; throws when it is not a ping (the handlers under test check more). */
export function parsePing(record: Buffer): Ping {
  return toPing(JSON.parse(record.toString('utf8')));
}

/** A job payload or parsed record as a Ping; throws when it has not both string fields. */
export function toPing(value: unknown): Ping {
  if (
    typeof value === 'object' &&
    value !== null &&
    'name' in value &&
    'timestamp' in value &&
    typeof value.name === 'string' &&
    typeof value.timestamp === 'string'
  ) {
    return { name: value.name, timestamp: value.timestamp };
  }
  throw new TypeError('not a ping: expected {"name": string, "timestamp": string}');
}

/** The bytes a producer pushes: the JSON of each record. */
export function encodePings(pings: readonly Ping[]): Buffer[] {
  return pings.map((ping) => Buffer.from(JSON.stringify(ping)));
}

/** A random lowercase hex suffix for database names and key prefixes. */
export function randomSuffix(): string {
  return randomBytes(6).toString('hex');
}

/** A database created for one variant; `drop()` removes it even while clients are still connected. */
export interface FreshDatabase {
  readonly name: string;
  readonly url: string;
  drop(): Promise<void>;
}

export async function createDatabase(): Promise<FreshDatabase> {
  const name = `bench_${randomSuffix()}`;
  await adminStatement(`CREATE DATABASE ${name}`);
  return {
    name,
    url: `postgres://postgres@${LOOPBACK}:5432/${name}`,
    drop: () => dropDatabase(name),
  };
}

/** How long a drop waits for closing pools to disconnect before it terminates what is left. */
const DROP_GRACE_MS = 3000;

/**
 * Drops a variant's database. Pools resolve end() before their connections are gone; terminating those
 * would raise errors in them, so the drop first waits a little for the database to have no sessions.
 */
async function dropDatabase(name: string): Promise<void> {
  const admin = await connect(POSTGRES_ADMIN_URL);
  try {
    const until = now() + DROP_GRACE_MS;
    while (now() < until) {
      const sessions = await admin.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1',
        [name],
      );
      if ((sessions.rows[0]?.n ?? 0) === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

async function adminStatement(text: string): Promise<void> {
  const admin = await connect(POSTGRES_ADMIN_URL);
  try {
    await admin.query(text);
  } finally {
    await admin.end();
  }
}

/** A plain client on `url`, for DDL and the count polls. */
export async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}

/**
 * A pool for a variant's inserts. pool.end() resolves before its connections have closed, so the forced drop
 * of the database that follows may terminate them (57P01): that error is expected then; others are printed.
 */
export function makePool(url: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  const report = (error: Error & { code?: string }): void => {
    if (error.code !== ADMIN_SHUTDOWN) process.stderr.write(`pg pool: ${error.message}\n`);
  };
  // Idle connections report on the pool, checked-out ones on themselves (graphile-worker wants both).
  pool.on('error', report);
  pool.on('connect', (client) => client.on('error', report));
  return pool;
}

const ADMIN_SHUTDOWN = '57P01';

/** Creates the `ping` table in a fresh database, for the variants that are not Baton. */
export async function createPingTable(url: string): Promise<void> {
  const db = await connect(url);
  try {
    await db.query(PING_TABLE);
  } finally {
    await db.end();
  }
}

export async function countPings(db: pg.Client): Promise<number> {
  const result = await db.query<{ count: number }>('SELECT count(*)::int AS count FROM ping');
  return result.rows[0]?.count ?? 0;
}

/** A Redis client for the benchmark's own commands (not the system under test's). */
export function redisClient(): Redis {
  return new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
}

/** LPUSHes `records` in order to `key`, chunked and pipelined; resolves the seconds it took. */
export async function pushRecords(redis: Redis, key: string, records: readonly Buffer[]): Promise<number> {
  const started = now();
  const step = PUSH_CHUNK * PUSH_PIPELINE;
  for (let start = 0; start < records.length; start += step) {
    const pipeline = redis.pipeline();
    for (let chunk = start; chunk < Math.min(start + step, records.length); chunk += PUSH_CHUNK) {
      pipeline.lpush(key, ...records.slice(chunk, chunk + PUSH_CHUNK));
    }
    const replies = await pipeline.exec();
    const failed = replies?.find(([error]) => error)?.[0];
    if (failed) throw failed;
  }
  return (now() - started) / 1000;
}

/** Deletes every key matching `pattern` (a SCAN glob); resolves how many. */
export async function deleteKeys(redis: Redis, pattern: string): Promise<number> {
  let deleted = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) deleted += await redis.unlink(...keys);
  } while (cursor !== '0');
  return deleted;
}

/** What a drain window measured: rows stored during it, over its length. */
export interface Drain {
  /** Rows stored between the first and the last count of the window. */
  readonly records: number;
  readonly seconds: number;
  /** Rows already stored when the window opened (a node starts consuming before it answers ready). */
  readonly storedBefore: number;
  /** Rows stored at the end. */
  readonly stored: number;
  /** True when every expected row was stored; false when the time box closed the window first. */
  readonly complete: boolean;
  /** The window on the monotonic clock in microseconds, to cut a CPU profile (bench/profile-top.ts). */
  readonly windowUs: readonly [number, number];
}

export interface DrainWatch {
  readonly db: pg.Client;
  /** Rows that make the drain complete. */
  readonly target: number;
  /** Closes the window early; undefined waits for `target` (the overall deadline still applies). */
  readonly timeBoxMs: number | undefined;
  readonly pollMs: number;
  readonly signal: AbortSignal;
  /**
   * Starts the consumer, right after the first count. A promise it returns that rejects ends the watch with
   * that error (a consumer that failed would otherwise leave the watch waiting for the deadline).
   */
  readonly start?: () => Promise<unknown> | void;
}

/**
 * Times a drain: counts `ping` rows, starts the consumer, then counts every `pollMs` until `target` rows are
 * stored or the time box closes. Each count is timed at its start (the snapshot it sees), so a window ends
 * up to one poll interval after the last row was committed, unless the consumer's own promise says when it
 * finished (only the limit's does).
 */
export async function watchDrain(watch: DrainWatch): Promise<Drain> {
  const openedUs = monotonicMicros();
  const opened = now();
  const storedBefore = await countPings(watch.db);
  const consumer = watchConsumer(watch.start?.());
  let at = opened;
  let stored = storedBefore;
  while (stored < watch.target) {
    if (watch.timeBoxMs !== undefined && now() - opened >= watch.timeBoxMs) break;
    await Promise.race([pause(watch.pollMs, watch.signal), consumer.settled]);
    if (consumer.failed) throw consumer.error;
    // Read before the count: a consumer that finishes while the count runs was not finished in its snapshot.
    const finished = consumer.finished;
    at = now();
    stored = await countPings(watch.db);
    if (finished && stored < watch.target)
      throw new Error(`the consumer finished with ${stored} of ${watch.target} rows stored`);
  }
  return {
    records: stored - storedBefore,
    seconds: (at - opened) / 1000,
    storedBefore,
    stored,
    complete: stored >= watch.target,
    windowUs: [openedUs, monotonicMicros()],
  };
}

interface ConsumerState {
  finished: boolean;
  failed: boolean;
  error?: unknown;
  /** Resolves when the consumer's promise settles (never, for a consumer that returned none). */
  readonly settled: Promise<void>;
}

/**
 * Follows the promise a consumer's start returned. A consumer that ends by itself once the list is empty (the
 * limit) ends the window at that moment instead of at the next poll.
 */
function watchConsumer(running: Promise<unknown> | void): ConsumerState {
  const state: ConsumerState = {
    finished: false,
    failed: false,
    settled: running
      ? running.then(
          () => void (state.finished = true),
          (error: unknown) => void Object.assign(state, { failed: true, error }),
        )
      : new Promise<void>(() => undefined),
  };
  return state;
}

/** The monotonic clock that V8's CPU profiles use, in microseconds. */
/** CPU seconds so far of the processes a variant runs on: its own, and the servers'. */
export interface CpuSnapshot {
  readonly bench: number;
  readonly child: number | undefined;
  readonly redis: number;
  readonly postgres: number;
}

/**
 * Reads the CPU time of this process, of `childPid`, and of every `redis-server` and `postgres` process
 * (all of them: on a shared machine that includes other users' queries). A server process that exits during
 * a window takes its time with it, so the server figures are lower bounds.
 */
export async function cpuSnapshot(childPid: number | undefined): Promise<CpuSnapshot> {
  const usage = process.cpuUsage();
  const servers = await serverCpuSeconds();
  return {
    bench: (usage.user + usage.system) / 1e6,
    child: childPid === undefined ? undefined : await processCpuSeconds(childPid),
    redis: servers.redis,
    postgres: servers.postgres,
  };
}

async function serverCpuSeconds(): Promise<{ redis: number; postgres: number }> {
  const totals = { redis: 0, postgres: 0 };
  const entries = await readdir('/proc').catch(() => []);
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const command = await readFile(`/proc/${entry}/comm`, 'utf8').catch(() => '');
    const server =
      command.trim() === 'redis-server' ? 'redis' : command.trim() === 'postgres' ? 'postgres' : '';
    if (!server) continue;
    totals[server] += (await processCpuSeconds(Number(entry))) ?? 0;
  }
  return totals;
}

/**
 * CPU used between two snapshots, as shares of one core over `seconds`, and per record stored (less noisy
 * than the rate on a shared machine, though the servers' figures include other users' load).
 */
export function cpuShares(before: CpuSnapshot, after: CpuSnapshot, seconds: number, records: number): string {
  const used: Array<[string, number]> = [['bench process', after.bench - before.bench]];
  if (before.child !== undefined && after.child !== undefined)
    used.unshift(['node', after.child - before.child]);
  used.push(['redis', after.redis - before.redis], ['postgres', after.postgres - before.postgres]);
  const share = (cpu: number): string => `${Math.round((cpu / seconds) * 100)}%`;
  const perRecord = (cpu: number): string => `${((cpu / Math.max(1, records)) * 1e6).toFixed(1)} µs`;
  return (
    `cpu (100% = one core): ${used.map(([name, cpu]) => `${name} ${share(cpu)}`).join(', ')}; ` +
    `per record: ${used.map(([name, cpu]) => `${name.replace(' process', '')} ${perRecord(cpu)}`).join(', ')}`
  );
}

/** Versions and durability settings of the two servers, for the report. */
export async function describeServers(redis: Redis): Promise<string> {
  const info = await redis.info('server');
  const version = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
  const setting = async (name: string): Promise<string> => {
    const reply: unknown = await redis.call('CONFIG', 'GET', name);
    return Array.isArray(reply) ? String(reply[1]) : 'unknown';
  };
  const admin = await connect(POSTGRES_ADMIN_URL);
  try {
    const pgVersion = await admin.query<{ server_version: string }>('SHOW server_version');
    const commit = await admin.query<{ synchronous_commit: string }>('SHOW synchronous_commit');
    return (
      `servers: Redis ${version} (appendonly ${await setting('appendonly')}, appendfsync ` +
      `${await setting('appendfsync')}), PostgreSQL ${pgVersion.rows[0]?.server_version ?? 'unknown'} ` +
      `(synchronous_commit ${commit.rows[0]?.synchronous_commit ?? 'unknown'}), both on ${LOOPBACK}`
    );
  } finally {
    await admin.end();
  }
}
