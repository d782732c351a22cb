// Ingest on the embedded store, end to end: small JSON records sent as HTTP NDJSON to a node (child process,
// quickstart handler, PGlite) until `select count(*) from ping` shows them all, against the raw batched-insert
// rate of the same rows into a PGlite of the same shape in this process (the faster of two insert methods).
import { mkdir } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';

import { PGlite } from '@electric-sql/pglite';

import type { NodeChild, Deadline } from './support.js';
import {
  describeMachine,
  formatMachine,
  formatRate,
  freePort,
  integerOption,
  monotonicMicros,
  nodeCount,
  now,
  ownCpuSeconds,
  parseOptions,
  pause,
  processCpuSeconds,
  request,
  ROOT,
  startNodeChild,
  stopNodeChild,
  waitForReady,
  runMeasured,
} from './support.js';

const NAME = 'ingest-embedded';
const HANDLER = join(ROOT, 'examples', 'quickstart', 'handlers', 'ping.ts');
const OPTIONS = ['records', 'request-records', 'in-flight', 'timeout-s', 'cpu-prof-dir'] as const;
/** Client settings that gave the best end-to-end figure on the reference machine (see bench/RESULTS.md). */
const DEFAULTS = { records: 200_000, requestRecords: 5000, inFlight: 2, timeoutS: 600 } as const;
/**
 * Rows per statement in the baseline. When a request carries another number of records, the baseline is also
 * measured at that size, since the node inserts a request's records in one statement: the ceiling stays honest.
 */
const BASELINE_BATCH = 1000;
/** How often the stored count is polled once every request has been answered. */
const POLL_MS = 20;
const PING_TABLE = `CREATE TABLE ping (
  id serial PRIMARY KEY,
  name text NOT NULL,
  timestamp timestamptz NOT NULL
)`;

interface Settings {
  readonly records: number;
  readonly requestRecords: number;
  readonly inFlight: number;
  readonly timeoutS: number;
  readonly cpuProfDir: string | undefined;
}

interface Ping {
  readonly name: string;
  readonly timestamp: string;
}

/** A timed run: how many records, how long. */
interface Timing {
  readonly records: number;
  readonly seconds: number;
}

/** What has been measured so far; printed whole at the end, or partly when the deadline passes. */
interface Report {
  /** The baseline runs done so far, each labelled with its method and batch size. */
  readonly baselines: Array<{ readonly label: string; readonly timing: Timing }>;
  /** Records answered 202 by the node so far, and when the last answer came. */
  accepted: number;
  acceptedSeconds?: number;
  /** Rows seen in `ping` by the last poll. */
  stored: number;
  baton?: Timing;
  queued?: number;
  errors?: number;
  /** CPU seconds used during the measured window by the node process and by this (client) process. */
  nodeCpuSeconds?: number;
  clientCpuSeconds?: number;
  /** The measured window on the monotonic clock in microseconds, to cut a CPU profile (bench/profile-top.ts). */
  windowUs?: readonly [number, number];
}

export async function main(args: readonly string[]): Promise<number> {
  const settings = readSettings(args);
  return runMeasured<Report>({
    timeoutS: settings.timeoutS,
    tmpPrefix: 'baton-bench-',
    report: { baselines: [], accepted: 0, stored: 0 },
    measure: (report, parent, deadline) => measure(settings, report, parent, deadline),
    print: (report) => printReport(settings, report),
    printJson,
  });
}

function readSettings(args: readonly string[]): Settings {
  const options = parseOptions(args, OPTIONS);
  return {
    records: integerOption(options, 'records', DEFAULTS.records),
    requestRecords: integerOption(options, 'request-records', DEFAULTS.requestRecords),
    inFlight: integerOption(options, 'in-flight', DEFAULTS.inFlight),
    timeoutS: integerOption(options, 'timeout-s', DEFAULTS.timeoutS),
    cpuProfDir: options.get('cpu-prof-dir'),
  };
}

async function measure(
  settings: Settings,
  report: Report,
  parent: string,
  deadline: Deadline,
): Promise<void> {
  const pings = makePings(settings.records);
  process.stdout.write(`${NAME}: ${settings.records} records; baseline first, then the node\n`);
  const batches = [...new Set([BASELINE_BATCH, settings.requestRecords])];
  for (const batch of batches) {
    for (const [method, insert] of [
      ['VALUES', insertValues],
      ['unnest', insertUnnest],
    ] as const) {
      const timing = await baseline(
        join(parent, `baseline-${method}-${batch}`),
        pings,
        batch,
        insert,
        deadline,
      );
      report.baselines.push({ label: `baseline PGlite ${method}, ${batch}/stmt`, timing });
    }
  }
  const bodies = ndjsonBodies(pings, settings.requestRecords);
  const nodeDir = join(parent, 'node');
  await mkdir(nodeDir);
  const nodeArgs =
    settings.cpuProfDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${settings.cpuProfDir}`];
  const child = await startNodeChild({
    dir: nodeDir,
    port: await freePort(),
    queues: [{ name: 'ping', handler: HANDLER, extra: 'batch_size = 1000\nmax_attempts = 3' }],
    nodeArgs,
  });
  try {
    await waitForReady(child, deadline);
    await runBaton(child, bodies, settings, report, deadline);
  } finally {
    const exit = await stopNodeChild(child);
    if (exit !== '0') process.stdout.write(`node exited with ${exit}:\n${child.output()}\n`);
  }
}

/** Records like `{"name":"bench-000042","timestamp":"2025-01-01T00:00:00.042Z"}` (~60 bytes). */
function makePings(count: number): Ping[] {
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

function ndjsonBodies(pings: readonly Ping[], perRequest: number): Buffer[] {
  const bodies: Buffer[] = [];
  for (let start = 0; start < pings.length; start += perRequest) {
    const lines = pings.slice(start, start + perRequest).map((ping) => `${JSON.stringify(ping)}\n`);
    bodies.push(Buffer.from(lines.join('')));
  }
  return bodies;
}

type InsertBatch = (db: PGlite, batch: readonly Ping[]) => Promise<void>;

/** Multi-row VALUES: one parameter per value. */
const insertValues: InsertBatch = async (db, batch) => {
  const rows = batch.map((_, index) => `($${2 * index + 1}, $${2 * index + 2})`);
  const params = batch.flatMap((ping) => [ping.name, ping.timestamp]);
  await db.query(`INSERT INTO ping (name, timestamp) VALUES ${rows.join(', ')}`, params);
};

/** Two array parameters unnested into rows: the quickstart handler's own statement. */
const insertUnnest: InsertBatch = async (db, batch) => {
  await db.query('INSERT INTO ping (name, timestamp) SELECT * FROM unnest($1::text[], $2::timestamptz[])', [
    batch.map((ping) => ping.name),
    batch.map((ping) => ping.timestamp),
  ]);
};

/** Inserts `pings` in batches into a fresh PGlite in `dir`; times the inserts only, then checks the count. */
async function baseline(
  dir: string,
  pings: readonly Ping[],
  batch: number,
  insert: InsertBatch,
  deadline: Deadline,
): Promise<Timing> {
  await mkdir(dir);
  const db = await PGlite.create(dir);
  try {
    await db.exec(PING_TABLE);
    const started = now();
    for (let start = 0; start < pings.length; start += batch) {
      deadline.check();
      await insert(db, pings.slice(start, start + batch));
    }
    const seconds = (now() - started) / 1000;
    const result = await db.query<{ count: number }>('SELECT count(*)::int AS count FROM ping');
    if (result.rows[0]?.count !== pings.length)
      throw new Error(`baseline stored ${result.rows[0]?.count} rows`);
    return { records: pings.length, seconds };
  } finally {
    await db.close();
  }
}

/** Sends every body with `inFlight` requests at a time, then polls until `ping` holds every record. */
async function runBaton(
  child: NodeChild,
  bodies: readonly Buffer[],
  settings: Settings,
  report: Report,
  deadline: Deadline,
): Promise<void> {
  const { signal } = deadline;
  const agent = new http.Agent({ keepAlive: true, maxSockets: settings.inFlight });
  const pid = child.process.pid ?? 0;
  const nodeCpuBefore = await processCpuSeconds(pid);
  const clientCpuBefore = ownCpuSeconds();
  const started = now();
  const startedUs = monotonicMicros();
  try {
    let next = 0;
    const sender = async (): Promise<void> => {
      while (next < bodies.length) {
        deadline.check();
        const body = bodies[next++] as Buffer;
        // Awaited first: `x += await …` would read x before the wait and lose the other senders' counts.
        const accepted = await sendBody(child.port, body, agent, signal);
        report.accepted += accepted;
      }
    };
    await Promise.all(Array.from({ length: settings.inFlight }, sender));
  } finally {
    agent.destroy();
  }
  report.acceptedSeconds = (now() - started) / 1000;
  while (report.stored < settings.records) {
    report.stored = await nodeCount(child.port, 'SELECT count(*)::int AS count FROM ping', signal);
    if (report.stored >= settings.records) break;
    // Records in the error queue will never reach `ping`: waiting for them would only run into the timeout.
    const errors = await nodeCount(
      child.port,
      'SELECT count(*)::int AS count FROM baton_queue_errors',
      signal,
    );
    if (errors > 0) throw new Error(`${errors} records went to errors-ping; the run cannot complete`);
    await pause(POLL_MS, signal);
  }
  report.baton = { records: report.stored, seconds: (now() - started) / 1000 };
  report.windowUs = [startedUs, monotonicMicros()];
  report.clientCpuSeconds = ownCpuSeconds() - clientCpuBefore;
  const nodeCpuAfter = await processCpuSeconds(pid);
  if (nodeCpuBefore !== undefined && nodeCpuAfter !== undefined)
    report.nodeCpuSeconds = nodeCpuAfter - nodeCpuBefore;
  report.queued = await nodeCount(
    child.port,
    'SELECT count(*)::int AS count FROM baton_queue_records',
    signal,
  );
  report.errors = await nodeCount(
    child.port,
    'SELECT count(*)::int AS count FROM baton_queue_errors',
    signal,
  );
}

/** The monotonic clock that V8's CPU profiles use, in microseconds. */
/** One NDJSON request; resolves the number of records the node accepted. */
async function sendBody(port: number, body: Buffer, agent: http.Agent, signal: AbortSignal): Promise<number> {
  const path = '/v1/queues/ping/records';
  const response = await request({
    port,
    method: 'POST',
    path,
    body,
    contentType: 'application/x-ndjson',
    agent,
    signal,
  });
  if (response.status !== 202) throw new Error(`POST ${path} answered ${response.status}: ${response.body}`);
  const answer: unknown = JSON.parse(response.body);
  const accepted =
    typeof answer === 'object' && answer !== null && 'accepted' in answer ? answer.accepted : undefined;
  if (typeof accepted !== 'number')
    throw new Error(`POST ${path} answered without "accepted": ${response.body}`);
  return accepted;
}

function rate(timing: Timing): number {
  return timing.records / timing.seconds;
}

function timingLine(label: string, timing: Timing): string {
  return `${label.padEnd(34)} ${timing.records} records in ${timing.seconds.toFixed(2)} s = ${formatRate(rate(timing))} records/s`;
}

/** The fastest baseline run: the ceiling the node is compared with. */
function bestBaseline(report: Report): Timing | undefined {
  let best: Timing | undefined;
  for (const { timing } of report.baselines) if (!best || rate(timing) > rate(best)) best = timing;
  return best;
}

function printReport(settings: Settings, report: Report): void {
  const lines = [
    `settings: ${settings.requestRecords} records per request, ${settings.inFlight} requests in flight`,
  ];
  for (const { label, timing } of report.baselines) lines.push(timingLine(label, timing));
  if (report.acceptedSeconds !== undefined) {
    lines.push(
      timingLine('baton: all requests answered 202', {
        records: report.accepted,
        seconds: report.acceptedSeconds,
      }),
    );
  } else {
    lines.push(`baton: ${report.accepted} records accepted so far`);
  }
  if (report.baton) lines.push(timingLine('baton end to end (rows stored)', report.baton));
  else lines.push(`baton: ${report.stored} rows seen stored by the last poll`);
  if (report.queued !== undefined)
    lines.push(`baton: ${report.queued} records left in the queue, ${report.errors} in errors-ping`);
  if (report.baton) lines.push(cpuLine(report.baton.seconds, report.nodeCpuSeconds, report.clientCpuSeconds));
  const best = bestBaseline(report);
  if (report.baton && best)
    lines.push(`ratio baton / best baseline: ${(rate(report.baton) / rate(best)).toFixed(2)}`);
  if (settings.cpuProfDir !== undefined && report.windowUs) {
    const [from, to] = report.windowUs;
    lines.push(`cpu profile of the node in ${settings.cpuProfDir}; window: --from ${from} --to ${to}`);
  }
  lines.push(formatMachine(describeMachine()));
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** How busy the node and the client were during the end-to-end window (100% = one core). */
function cpuLine(seconds: number, node: number | undefined, client: number | undefined): string {
  const share = (cpu: number | undefined): string =>
    cpu === undefined ? 'n/a' : `${cpu.toFixed(2)} s (${Math.round((cpu / seconds) * 100)}% of a core)`;
  return `cpu during the window: node ${share(node)}, bench client ${share(client)}`;
}

function printJson(report: Report): void {
  const best = bestBaseline(report);
  if (!report.baton || !best) throw new Error('the run finished without both figures');
  const ratio = Math.round((rate(report.baton) / rate(best)) * 100) / 100;
  const line = {
    bench: NAME,
    records_per_s: Math.round(rate(report.baton)),
    baseline_per_s: Math.round(rate(best)),
    ratio,
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
}
