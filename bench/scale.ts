// The store queue and the read routes at scale, on a PostgreSQL store without statistics (a fresh database,
// never analyzed by hand) and on the embedded store: drain rate of a small and of a large backlog, the idle
// CPU of node and database with a large backlog waiting out a retry back-off, and the p99 of the read routes
// (queues, metrics, event listeners, a rare namespace's events, an error page) over large tables. Data is
// loaded with plain SQL (INSERT … SELECT generate_series) through the node's POST /v1/sql.
import { mkdir } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

import pg from 'pg';

import type { Deadline, NodeChild } from './support.js';
import {
  freePort,
  integerOption,
  machineAndLoad,
  monotonicMicros,
  nodeSql,
  now,
  parseOptions,
  pause,
  processCpuSeconds,
  request,
  ROOT,
  runMeasured,
  startNodeChild,
  stopNodeChild,
  UsageError,
  waitForReady,
} from './support.js';

const NAME = 'scale';
const OPTIONS = ['rows', 'small', 'stores', 'samples', 'idle-s', 'timeout-s', 'cpu-prof-dir'] as const;
const HANDLER = join(ROOT, 'bench', 'scale-fixtures', 'noop-handler.ts');
const QUEUE = 'work';
/** The server the PostgreSQL store is made on; a fresh database is created and dropped. */
const SERVER_URL = process.env['BATON_BENCH_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ERROR_ROWS = 100_000;
/** The PostgreSQL store's query limit, so that a bulk load of 10M rows in one statement can finish. */
const LOAD_TIMEOUT_MS = 1_800_000;
/** Goals: the large backlog drains at this share of the small one's rate at least, idle below this CPU. */
const DRAIN_RATIO_GOAL = 0.8;
const IDLE_CPU_GOAL_PCT = 5;
const READ_P99_GOAL_MS = 50;

type StoreKind = 'postgres' | 'embedded';

interface Settings {
  readonly rows: number;
  readonly small: number;
  readonly stores: readonly StoreKind[];
  readonly samples: number;
  readonly idleS: number;
  readonly timeoutS: number;
  /** Where the node writes a CPU profile (`--cpu-prof`), one per store; the drains' windows are printed. */
  readonly cpuProfDir: string | undefined;
}

interface StoreReport {
  drainSmall?: number;
  drainLarge?: number;
  idleCpuPct?: number;
  idleCpuEmptyPct?: number;
  emptyPostP50?: number;
  inlinePostP50?: number;
  inlinePostMs?: number;
  queuesP99?: number;
  metricsP99?: number;
  listenersP99?: number;
  eventsRareP99?: number;
  errorsPageP99?: number;
  /** The longest the node's thread was blocked (event-loop delay), during the large drain and after it. */
  drainBlockMs?: number;
  readsBlockMs?: number;
}

type Report = Partial<Record<StoreKind, StoreReport>>;

export async function main(args: readonly string[]): Promise<number> {
  const settings = readSettings(args);
  process.stdout.write(machineAndLoad());
  return runMeasured<Report>({
    timeoutS: settings.timeoutS,
    tmpPrefix: 'baton-bench-scale-',
    report: {},
    measure: async (report, parent, deadline) => {
      for (const store of settings.stores) {
        const part: StoreReport = {};
        report[store] = part;
        await measureStore(store, settings, part, join(parent, store), deadline);
      }
    },
    print: (report) => printReport(settings, report),
    printJson: (report) => {
      for (const store of settings.stores) {
        const part = report[store] ?? {};
        process.stdout.write(
          `${JSON.stringify({
            bench: NAME,
            store,
            rows: settings.rows,
            drain_small_per_s: round(part.drainSmall),
            drain_1m_per_s: round(part.drainLarge),
            drain_ratio: round2(ratio(part.drainLarge, part.drainSmall)),
            idle_cpu_backoff_1m_pct: round2(part.idleCpuPct),
            idle_cpu_empty_pct: round2(part.idleCpuEmptyPct),
            post_one_empty_p50_ms: round2(part.emptyPostP50),
            post_one_backoff_1m_p50_ms: round2(part.inlinePostP50),
            post_one_backoff_1m_p99_ms: round2(part.inlinePostMs),
            queues_p99_ms: round2(part.queuesP99),
            metrics_p99_ms: round2(part.metricsP99),
            listeners_p99_ms: round2(part.listenersP99),
            events_rare_ns_p99_ms: round2(part.eventsRareP99),
            errors_page_p99_ms: round2(part.errorsPageP99),
            drain_block_max_ms: round2(part.drainBlockMs),
            reads_block_max_ms: round2(part.readsBlockMs),
          })}\n`,
        );
      }
    },
  });
}

function readSettings(args: readonly string[]): Settings {
  const options = parseOptions(args, OPTIONS);
  const stores = (options.get('stores') ?? 'postgres,embedded').split(',');
  for (const store of stores) {
    if (store !== 'postgres' && store !== 'embedded')
      throw new UsageError(`--stores: unknown store ${store}`);
  }
  return {
    rows: countOption(options, 'rows', 1_000_000),
    small: countOption(options, 'small', 10_000),
    stores: stores as StoreKind[],
    samples: integerOption(options, 'samples', 100),
    idleS: integerOption(options, 'idle-s', 10),
    timeoutS: integerOption(options, 'timeout-s', 3_600),
    cpuProfDir: options.get('cpu-prof-dir'),
  };
}

/** A count with an optional k or m suffix: 100k, 1m, 5m. */
function countOption(options: Map<string, string>, name: string, fallback: number): number {
  const text = options.get(name);
  if (text === undefined) return fallback;
  const match = /^(\d+)([km]?)$/i.exec(text);
  if (!match) throw new UsageError(`--${name} expects a count such as 100k or 1m, got ${text}`);
  const unit = { '': 1, k: 1_000, m: 1_000_000 }[(match[2] ?? '').toLowerCase()] ?? 1;
  return Number(match[1]) * unit;
}

async function measureStore(
  store: StoreKind,
  settings: Settings,
  report: StoreReport,
  dir: string,
  deadline: Deadline,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  const database = store === 'postgres' ? await createDatabase() : undefined;
  // The loads of 5M and 10M rows are single statements of a minute or more: the statement limit is raised
  // (the node's own statements are short whatever it is).
  const extraToml = database
    ? `[store]\nurl = ${JSON.stringify(database.url)}\npool_size = 4\nquery_timeout_ms = ${LOAD_TIMEOUT_MS}`
    : undefined;
  const child = await startNodeChild({
    dir,
    port: await freePort(),
    queues: [{ name: QUEUE, handler: HANDLER }],
    ...(extraToml ? { extraToml } : {}),
    ...(settings.cpuProfDir !== undefined
      ? { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${join(settings.cpuProfDir, store)}`] }
      : {}),
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const say = (text: string): void => void process.stdout.write(`  ${store}: ${text}\n`);
  try {
    await waitForReady(child, deadline);
    // A load (a bulk INSERT through /v1/sql) holds the embedded node's thread while it runs: the monitor of
    // the longest block is reset after each, so that it tells what the node's own work costs.
    const run = async (text: string): Promise<Array<Record<string, unknown>>> => {
      const rows = await nodeSql(child.port, text, deadline.signal);
      await longestBlockMs(child, agent, deadline);
      return rows;
    };

    const profiled = (window: readonly [number, number]): string =>
      settings.cpuProfDir === undefined ? '' : ` (cpu profile window: --from ${window[0]} --to ${window[1]})`;
    const small = await drain(child, agent, run, settings.small, deadline);
    report.drainSmall = small.perS;
    say(`drain of ${settings.small} records: ${round(report.drainSmall)}/s${profiled(small.windowUs)}`);
    report.idleCpuEmptyPct = await idleCpu(child, database, settings.idleS, deadline);
    say(`idle CPU with the queue empty: ${round2(report.idleCpuEmptyPct)} % of a core (node + database)`);
    [report.emptyPostP50] = await percentiles(50, () => postOne(child, agent, deadline));
    say(`POST of one record with the queue empty: p50 ${round2(report.emptyPostP50)} ms`);

    // The large backlog on a table that only the small one used, as a backlog that builds up meets it.
    const large = await drain(child, agent, run, settings.rows, deadline);
    report.drainLarge = large.perS;
    report.drainBlockMs = await longestBlockMs(child, agent, deadline);
    say(`drain of ${settings.rows} records: ${round(report.drainLarge)}/s${profiled(large.windowUs)}`);
    say(`longest block of the node's thread during that drain: ${round2(report.drainBlockMs)} ms`);
    say(await recordsTable(run));

    await run(
      `INSERT INTO baton_queue_records (queue, payload, attempts, run_after, last_error)
       SELECT '${QUEUE}', '\\x7b7d'::bytea, 1, now() + interval '1 day', 'bench: waiting out a back-off'
       FROM generate_series(1, ${settings.rows})`,
    );
    say(`${settings.rows} records in back-off loaded`);
    await pause(2_000, deadline.signal);
    report.idleCpuPct = await idleCpu(child, database, settings.idleS, deadline);
    say(await recordsTable(run));
    say(`idle CPU with them waiting: ${round2(report.idleCpuPct)} % of a core (node + database)`);
    [report.inlinePostP50, report.inlinePostMs] = await percentiles(50, () =>
      postOne(child, agent, deadline),
    );
    report.queuesP99 = await p99(settings.samples, () => get(child, agent, '/v1/queues', deadline));
    // Each scrape resets the monitor's maximum: the longest block is the maximum of what each one reports.
    let readsBlockMs = await longestBlockMs(child, agent, deadline);
    report.metricsP99 = await p99(settings.samples, async () => {
      readsBlockMs = Math.max(readsBlockMs, await longestBlockMs(child, agent, deadline));
    });
    say(
      `POST of one record p50 ${round2(report.inlinePostP50)} ms, p99 ${round2(report.inlinePostMs)} ms; GET /v1/queues p99 ${round2(report.queuesP99)} ms, /metrics p99 ${round2(report.metricsP99)} ms`,
    );

    await loadEventsAndErrors(run, settings.rows);
    say(`${settings.rows} events with a lagging listener and ${ERROR_ROWS} error records loaded`);
    report.listenersP99 = await p99(settings.samples, () =>
      get(child, agent, '/v1/events/listeners', deadline),
    );
    report.eventsRareP99 = await p99(settings.samples, () =>
      get(child, agent, '/v1/events?namespace=rare&limit=100', deadline),
    );
    report.errorsPageP99 = await p99(settings.samples, () =>
      get(child, agent, `/v1/queues/${QUEUE}/errors?limit=100&after=${ERROR_ROWS / 2}`, deadline),
    );
    say(
      `p99: listeners ${round2(report.listenersP99)} ms, rare namespace ${round2(report.eventsRareP99)} ms, error page ${round2(report.errorsPageP99)} ms`,
    );
    report.readsBlockMs = Math.max(readsBlockMs, await longestBlockMs(child, agent, deadline));
    say(
      `longest block of the node's thread from the back-off load to here: ${round2(report.readsBlockMs)} ms`,
    );
  } finally {
    agent.destroy();
    const exit = await stopNodeChild(child);
    if (exit !== '0') process.stdout.write(`node exited with ${exit}:\n${child.output().slice(-4000)}\n`);
    else printWarnings(store, child.output());
    await database?.drop();
  }
}

/**
 * Loads `count` ready records and times the node's drain of them: from the first claim (the node finds a
 * load made with plain SQL at its next poll, up to half a second later) until none is waiting or claimed.
 */
async function drain(
  child: NodeChild,
  agent: http.Agent,
  run: (text: string) => Promise<unknown>,
  count: number,
  deadline: Deadline,
): Promise<{ perS: number; windowUs: readonly [number, number] }> {
  await run(
    `INSERT INTO baton_queue_records (queue, payload) SELECT '${QUEUE}', '\\x7b7d'::bytea FROM generate_series(1, ${count})`,
  );
  let started: number | undefined;
  let startedUs = 0;
  for (;;) {
    deadline.check();
    const { depth, inFlight } = await queueFigures(child, agent, deadline);
    if (started === undefined && (depth < count || inFlight > 0)) {
      started = now();
      startedUs = monotonicMicros();
    }
    if (depth + inFlight === 0) break;
    await pause(started === undefined ? 10 : 50, deadline.signal);
  }
  return { perS: (count / (now() - (started ?? now()))) * 1000, windowUs: [startedUs, monotonicMicros()] };
}

async function queueFigures(
  child: NodeChild,
  agent: http.Agent,
  deadline: Deadline,
): Promise<{ depth: number; inFlight: number }> {
  const response = await request({
    port: child.port,
    method: 'GET',
    path: '/v1/queues',
    agent,
    signal: deadline.signal,
  });
  const parsed: unknown = JSON.parse(response.body);
  const queues =
    typeof parsed === 'object' && parsed !== null && 'queues' in parsed ? parsed.queues : undefined;
  const queue: unknown = Array.isArray(queues)
    ? queues.find((item: { name?: unknown }) => item.name === QUEUE)
    : undefined;
  if (typeof queue !== 'object' || queue === null || !('depth' in queue)) {
    throw new Error(`GET /v1/queues: no queue ${QUEUE} in ${response.body.slice(0, 300)}`);
  }
  const figures = queue as { depth: unknown; in_flight?: unknown; inFlight?: unknown };
  return { depth: Number(figures.depth), inFlight: Number(figures.in_flight ?? figures.inFlight ?? 0) };
}

/** CPU of the node and of the database's backends serving it over `seconds`, in % of one core. */
async function idleCpu(
  child: NodeChild,
  database: Database | undefined,
  seconds: number,
  deadline: Deadline,
): Promise<number> {
  const pids = [child.process.pid ?? 0, ...(database ? await database.backends() : [])];
  const before = await cpuOf(pids);
  const started = now();
  await pause(seconds * 1000, deadline.signal);
  const after = await cpuOf(pids);
  const elapsedS = (now() - started) / 1000;
  let used = 0;
  for (const [pid, cpu] of after) used += cpu - (before.get(pid) ?? cpu);
  return (used / elapsedS) * 100;
}

async function cpuOf(pids: readonly number[]): Promise<Map<number, number>> {
  const seconds = new Map<number, number>();
  for (const pid of pids) {
    const cpu = await processCpuSeconds(pid);
    if (cpu !== undefined) seconds.set(pid, cpu);
  }
  return seconds;
}

/** The upkeep's work so far on the records table, and its dead rows (from pg_stat_user_tables). */
async function recordsTable(run: (text: string) => Promise<Array<Record<string, unknown>>>): Promise<string> {
  const [row] = await run(
    `SELECT n_live_tup AS live, n_dead_tup AS dead, vacuum_count AS vacuums, analyze_count AS analyzes
     FROM pg_stat_user_tables WHERE relid = to_regclass('baton_queue_records')`,
  );
  return `records table: ${String(row?.['live'])} live rows, ${String(row?.['dead'])} dead, ${String(row?.['vacuums'])} vacuums, ${String(row?.['analyzes'])} analyzes so far`;
}

/** The node's warnings of the run (slow statements of the embedded store among them), 20 at most. */
function printWarnings(store: StoreKind, output: string): void {
  const warnings = output.split('\n').filter((line) => /"level":(40|50|60)/.test(line));
  if (warnings.length === 0) return;
  process.stdout.write(`  ${store}: the node's warnings (${warnings.length}):\n`);
  for (const line of warnings.slice(0, 20)) process.stdout.write(`    ${line.slice(0, 400)}\n`);
}

/**
 * The longest event-loop delay of the node since the previous call, in ms: `/metrics` reports the maximum
 * of prom-client's event-loop monitor (10 ms resolution), which each scrape resets.
 */
async function longestBlockMs(child: NodeChild, agent: http.Agent, deadline: Deadline): Promise<number> {
  const response = await request({
    port: child.port,
    method: 'GET',
    path: '/metrics',
    agent,
    signal: deadline.signal,
  });
  const match = /^baton_nodejs_eventloop_lag_max_seconds(?:\{[^}]*\})? (\S+)$/m.exec(response.body);
  if (!match) throw new Error('GET /metrics: no baton_nodejs_eventloop_lag_max_seconds');
  return Number(match[1]) * 1000;
}

/** 1M events (one namespace, a rare one at the start), a listener that never read any, and error records. */
async function loadEventsAndErrors(run: (text: string) => Promise<unknown>, rows: number): Promise<void> {
  await run(
    `INSERT INTO baton_events ("offset", namespace, key, value, sender, create_time)
     SELECT n, CASE WHEN n <= 10 THEN 'rare' ELSE 'default' END, 'sensor.' || (n % 16), n::text, 'bench',
            now() - interval '1 hour' + n * interval '1 millisecond'
     FROM generate_series(1, ${rows}) AS n`,
  );
  await run(
    `UPDATE baton_event_head SET last_offset = ${rows}, last_time = now() - interval '1 hour' + ${rows} * interval '1 millisecond'`,
  );
  await run(
    `INSERT INTO baton_event_listeners (namespace, name, "offset") VALUES ('default', 'lagging', 0) ON CONFLICT DO NOTHING`,
  );
  await run(
    `INSERT INTO baton_queue_errors (queue, payload, attempts, error, enqueued_at)
     SELECT '${QUEUE}', '\\x7b7d'::bytea, 3, 'bench: failed', now() FROM generate_series(1, ${ERROR_ROWS})`,
  );
}

async function get(child: NodeChild, agent: http.Agent, path: string, deadline: Deadline): Promise<void> {
  const response = await request({ port: child.port, method: 'GET', path, agent, signal: deadline.signal });
  if (response.status !== 200)
    throw new Error(`GET ${path} answered ${response.status}: ${response.body.slice(0, 300)}`);
}

async function postOne(child: NodeChild, agent: http.Agent, deadline: Deadline): Promise<void> {
  const path = `/v1/queues/${QUEUE}/records`;
  const response = await request({
    port: child.port,
    method: 'POST',
    path,
    body: Buffer.from('{}\n'),
    contentType: 'application/x-ndjson',
    agent,
    signal: deadline.signal,
  });
  if (response.status >= 300)
    throw new Error(`POST ${path} answered ${response.status}: ${response.body.slice(0, 300)}`);
}

/** The 99th percentile of `samples` sequential calls, in ms. */
async function p99(samples: number, call: () => Promise<void>): Promise<number> {
  return (await percentiles(samples, call))[1];
}

/** The median and the 99th percentile of `samples` sequential calls, in ms. */
async function percentiles(samples: number, call: () => Promise<void>): Promise<[number, number]> {
  const times: number[] = [];
  for (let index = 0; index < samples; index += 1) {
    const started = now();
    await call();
    times.push(now() - started);
  }
  times.sort((a, b) => a - b);
  const at = (share: number): number =>
    times[Math.min(times.length - 1, Math.ceil(times.length * share) - 1)] ?? NaN;
  return [at(0.5), at(0.99)];
}

interface Database {
  readonly url: string;
  /** Pids of the server processes connected to the database. */
  backends(): Promise<number[]>;
  drop(): Promise<void>;
}

/** A fresh database on the server: no statistics but what Baton itself gathers. */
async function createDatabase(): Promise<Database> {
  const name = `baton_bench_scale_${randomBytes(4).toString('hex')}`;
  const admin = async <T>(use: (client: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: SERVER_URL, connectionTimeoutMillis: 5_000 });
    await client.connect();
    try {
      return await use(client);
    } finally {
      await client.end();
    }
  };
  await admin((client) => client.query(`CREATE DATABASE ${name}`));
  const url = new URL(SERVER_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    backends: () =>
      admin(async (client) => {
        const result = await client.query<{ pid: number }>(
          'SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
          [name],
        );
        return result.rows.map((row) => row.pid);
      }),
    drop: () =>
      admin((client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined),
  };
}

function printReport(settings: Settings, report: Report): void {
  process.stdout.write(`${NAME}: ${settings.rows} rows (small backlog ${settings.small})\n`);
  for (const store of settings.stores) {
    const part = report[store];
    if (!part) continue;
    const drainRatio = ratio(part.drainLarge, part.drainSmall);
    process.stdout.write(
      [
        `  ${store}:`,
        `    drain ${settings.small}: ${round(part.drainSmall)}/s, drain ${settings.rows}: ${round(part.drainLarge)}/s, ratio ${round2(drainRatio)} (goal >= ${DRAIN_RATIO_GOAL})`,
        `    idle CPU with ${settings.rows} in back-off: ${round2(part.idleCpuPct)} % of a core (goal < ${IDLE_CPU_GOAL_PCT}; with the queue empty ${round2(part.idleCpuEmptyPct)} %)`,
        `    POST of one record with them waiting: p50 ${round2(part.inlinePostP50)} ms, p99 ${round2(part.inlinePostMs)} ms (queue empty: p50 ${round2(part.emptyPostP50)} ms)`,
        `    p99 ms: queues ${round2(part.queuesP99)}, metrics ${round2(part.metricsP99)}, listeners ${round2(part.listenersP99)}, rare namespace ${round2(part.eventsRareP99)}, error page ${round2(part.errorsPageP99)} (goal <= ${READ_P99_GOAL_MS} on postgres)`,
        `    longest block of the node's thread: ${round2(part.drainBlockMs)} ms in the large drain, ${round2(part.readsBlockMs)} ms from the back-off load to the last read (goal <= ${READ_P99_GOAL_MS} embedded)`,
        '',
      ].join('\n'),
    );
  }
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b;
}

function round(value: number | undefined): number | null {
  return value === undefined || !Number.isFinite(value) ? null : Math.round(value);
}

function round2(value: number | undefined): number | null {
  return value === undefined || !Number.isFinite(value) ? null : Math.round(value * 100) / 100;
}
