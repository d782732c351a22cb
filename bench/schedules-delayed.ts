// The delayed records of `npm run bench -- schedules`: one node (a child process, PostgreSQL store) with one
// queue, on the store (default) or on Redis (`--delayed-backend redis`). N records (`--delayed`, default
// 100,000), each `{"id": i, "run_at": "<ISO>"}` with the same `run_at` in its envelope line, are POSTed as
// NDJSON with `Baton-Envelope: json` in requests of 10,000 lines; each run_at is 1 s plus a uniform random
// part of the spread (`--spread-s`, default 60) after its request is built, so that every record is stored
// before it is due. The handler inserts each record with the database's clock at the insert: the clock that
// decides for a store queue (on a Redis queue the node's clock decides; both are this host's clock here).
// From that table: records run (distinct ids), run twice, run early, and lateness (run time − run_at) of
// each record's first run.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import { connect, createDatabase, deleteKeys, randomSuffix, REDIS_URL, redisClient } from './redis-pg.js';
import type { Deadline } from './support.js';
import {
  freePort,
  pause,
  request,
  ROOT,
  startNodeChild,
  stopNodeChild,
  tomlString,
  waitForReady,
} from './support.js';

const HANDLER = join(ROOT, 'bench', 'schedules-fixtures', 'delayed-handler.ts');
const QUEUE = 'delayed';
const LINES_PER_REQUEST = 10_000;
/** Every run_at is at least this far after its request is built. */
const LEAD_MS = 1_000;
/** How long after the last run_at the records still missing are waited for before they count as lost. */
const GRACE_MS = 30_000;

export type DelayedBackend = 'store' | 'redis';

export interface DelayedSettings {
  readonly count: number;
  readonly spreadS: number;
  readonly backend: DelayedBackend;
}

export interface DelayedReport {
  backend?: DelayedBackend;
  sent?: number;
  /** Records stored only after their run_at had passed (their lateness includes the request's time). */
  dueBeforeStored?: number;
  sendMs?: number;
  /** Distinct records run, rows beyond one per record, runs before run_at (the database's clock). */
  ran?: number;
  twice?: number;
  early?: number;
  /** Lateness of each record's first run after its run_at, ms. */
  p50Ms?: number;
  p99Ms?: number;
  maxMs?: number;
}

export async function measureDelayed(
  report: DelayedReport,
  parent: string,
  settings: DelayedSettings,
  deadline: Deadline,
): Promise<void> {
  report.backend = settings.backend;
  const database = await createDatabase();
  const key = `bench-delayed-${randomSuffix()}`;
  const redis = settings.backend === 'redis' ? redisClient() : undefined;
  try {
    const dir = join(parent, `${database.name}-delayed`);
    await mkdir(dir, { recursive: true });
    const store = `[store]\nurl = ${tomlString(database.url)}\npool_size = 4`;
    const child = await startNodeChild({
      dir,
      port: await freePort(),
      queues: [
        {
          name: QUEUE,
          handler: HANDLER,
          ...(redis ? { extra: `backend = "redis"\nkey = "${key}"` } : {}),
        },
      ],
      extraToml: redis ? `${store}\n\n[redis]\nurl = ${tomlString(REDIS_URL)}` : store,
    });
    try {
      await waitForReady(child, deadline);
      process.stdout.write(
        `delayed records: ${settings.count} on a ${settings.backend} queue, run_at spread over ` +
          `${settings.spreadS} s\n`,
      );
      const lastRunAt = await send(child.port, settings, report, deadline);
      const db = await connect(database.url);
      try {
        await waitForAll(db, settings.count, lastRunAt + GRACE_MS, deadline);
        Object.assign(report, await tally(db));
      } finally {
        await db.end();
      }
    } finally {
      await stopNodeChild(child);
    }
  } finally {
    if (redis) {
      await deleteKeys(redis, `${key}*`);
      redis.disconnect();
    }
    await database.drop();
  }
}

/** POSTs the records; resolves the latest run_at sent (epoch ms). */
async function send(
  port: number,
  settings: DelayedSettings,
  report: DelayedReport,
  deadline: Deadline,
): Promise<number> {
  const started = Date.now();
  let lastRunAt = 0;
  let dueBeforeStored = 0;
  for (let first = 0; first < settings.count; first += LINES_PER_REQUEST) {
    const built = Date.now();
    const runAts: number[] = [];
    const lines: string[] = [];
    for (let id = first; id < Math.min(first + LINES_PER_REQUEST, settings.count); id++) {
      const runAt = built + LEAD_MS + Math.floor(Math.random() * settings.spreadS * 1_000);
      const iso = new Date(runAt).toISOString();
      runAts.push(runAt);
      lines.push(JSON.stringify({ record: JSON.stringify({ id, run_at: iso }), run_at: iso }));
    }
    const response = await request({
      port,
      method: 'POST',
      path: `/v1/queues/${QUEUE}/records`,
      body: Buffer.from(`${lines.join('\n')}\n`),
      contentType: 'application/x-ndjson',
      headers: { 'baton-envelope': 'json' },
      signal: deadline.signal,
    });
    if (response.status < 200 || response.status >= 300) {
      throw new Error(`POST of delayed records answered ${response.status}: ${response.body.slice(0, 300)}`);
    }
    const stored = Date.now();
    dueBeforeStored += runAts.filter((runAt) => runAt < stored).length;
    lastRunAt = Math.max(lastRunAt, ...runAts);
  }
  report.sent = settings.count;
  report.sendMs = Date.now() - started;
  report.dueBeforeStored = dueBeforeStored;
  process.stdout.write(
    `  sent in ${report.sendMs} ms (${LINES_PER_REQUEST} lines per request); ${dueBeforeStored} were due ` +
      `before their request was answered\n`,
  );
  return lastRunAt;
}

/** Waits until `count` distinct records have run, or until `until` (epoch ms) has passed. */
async function waitForAll(
  db: Awaited<ReturnType<typeof connect>>,
  count: number,
  until: number,
  deadline: Deadline,
): Promise<void> {
  let reported = 0;
  for (;;) {
    deadline.check();
    const result = await db.query<{ ran: number }>(
      'SELECT count(DISTINCT id)::int AS ran FROM bench_delayed',
    );
    const ran = result.rows[0]?.ran ?? 0;
    if (ran >= count || Date.now() > until) return;
    if (Date.now() - reported >= 10_000) {
      reported = Date.now();
      process.stdout.write(`  ${ran} of ${count} run\n`);
    }
    await pause(500, deadline.signal);
  }
}

async function tally(db: Awaited<ReturnType<typeof connect>>): Promise<DelayedReport> {
  const result = await db.query<{
    ran: number;
    rows: number;
    early: number;
    p50: number | null;
    p99: number | null;
    max: number | null;
  }>(
    `WITH first AS (
       SELECT id, min(run_at) AS run_at, min(ran_at) AS ran_at FROM bench_delayed GROUP BY id
     ), late AS (
       SELECT (extract(epoch FROM ran_at - run_at) * 1000)::float8 AS ms FROM first
     )
     SELECT (SELECT count(*) FROM first)::int AS ran,
            (SELECT count(*) FROM bench_delayed)::int AS rows,
            (SELECT count(*) FROM bench_delayed WHERE ran_at < run_at)::int AS early,
            (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM late)::float8 AS p50,
            (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM late)::float8 AS p99,
            (SELECT max(ms) FROM late)::float8 AS max`,
  );
  const row = result.rows[0];
  if (!row) throw new Error('the tally of delayed records gave no row');
  return {
    ran: row.ran,
    twice: row.rows - row.ran,
    early: row.early,
    ...(row.p50 === null ? {} : { p50Ms: row.p50 }),
    ...(row.p99 === null ? {} : { p99Ms: row.p99 }),
    ...(row.max === null ? {} : { maxMs: row.max }),
  };
}

export function formatDelayed(report: DelayedReport): string {
  if (report.ran === undefined) return 'delayed records: none measured\n';
  const ms = (value: number | undefined): string => (value ?? Number.NaN).toFixed(1);
  return (
    `delayed records (${report.backend} queue): ${report.ran} of ${report.sent} run, ${report.twice} twice, ` +
    `${report.early} early; lateness p50 ${ms(report.p50Ms)} ms, p99 ${ms(report.p99Ms)} ms, ` +
    `max ${ms(report.maxMs)} ms\n`
  );
}
