// `npm run bench -- schedules`: how late the ticks of a schedule are applied, how soon a new primary
// applies the ticks that fell while no primary acted, and how late delayed records run. Lateness: a group
// of one node on PostgreSQL with a 1-second schedule (`--ticks`, default 60); for each tick, from its time
// to the start of its transaction (the node's `lateness_ms`) and to its row's insert (PostgreSQL's
// clock_timestamp; same host), against the baseline of a bare setTimeout aimed at each second in this
// process. Catch-up after a crash: two nodes, missed = "all"; the primary is killed with SIGKILL (`--kills`,
// default 5) and each time the first tick after the kill is awaited: the time from the kill to its row,
// against the failover (the kill to the fence's raise by the new primary). The postgres elector notices a
// killed primary's session at once, so few ticks fall between primaries there. Catch-up after a pause: the
// primary is stopped with SIGSTOP for `--stop-s` seconds (default 5, `--stops` times, default 3), so that
// its lease runs out and ticks fall while no primary acts; the time from the stop to the last of those ticks
// applied by the new primary, against its failover plus one tick (the goal). Catch-up after a crash whose
// lease must run out: the same with SIGKILL (`--crashes` times, default 3) on the redis elector, which learns
// of a dead primary only from its lease. Delayed records: see schedules-delayed.ts (`--delayed`,
// `--spread-s`, `--delayed-backend`).
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { percentile } from './failover-support.js';
import type { DelayedBackend, DelayedReport } from './schedules-delayed.js';
import { formatDelayed, measureDelayed } from './schedules-delayed.js';
import type { FreshDatabase } from './redis-pg.js';
import { connect, createDatabase, deleteKeys, REDIS_URL, redisClient } from './redis-pg.js';
import type { Deadline } from './support.js';
import {
  freePort,
  groupNodeToml,
  integerOption,
  machineAndLoad,
  parseOptions,
  pause,
  request,
  ROOT,
  runMeasured,
  UsageError,
} from './support.js';

const NAME = 'schedules';
const OPTIONS = [
  'ticks',
  'kills',
  'stops',
  'stop-s',
  'crashes',
  'delayed',
  'spread-s',
  'delayed-backend',
  'timeout-s',
];
const DEFAULTS = {
  ticks: 60,
  kills: 5,
  stops: 3,
  stopS: 5,
  crashes: 3,
  delayed: 100_000,
  spreadS: 60,
  timeoutS: 900,
};
/** The schedule's period: the goal of a catch-up is the failover plus one of it. */
const TICK_MS = 1_000;

interface Report {
  /** From the tick time to the start of its transaction, ms (the node's lateness_ms). */
  wake?: number[];
  /** From the tick time to the insert of its row, ms (PostgreSQL's clock). */
  insert?: number[];
  /** A bare setTimeout aimed at each second boundary, ms late. */
  timer?: number[];
  /** Per kill: to the new primary's fence raise, and to the row of the first tick after the kill, ms. */
  failover?: number[];
  catchUp?: number[];
  /** SIGSTOP of the primary (postgres elector), and SIGKILL of the primary on the redis elector. */
  stop?: Lapse;
  crash?: Lapse;
  delayed: DelayedReport;
}

/** A primary that stops acting until its lease runs out: what the next one does with the ticks meanwhile. */
interface Lapse {
  /** Per fault: to the new primary's fence raise, and to the row of the last tick that fell before it, ms. */
  readonly failover: number[];
  readonly catchUp: number[];
  /** Ticks that fell between the fault and the fence raise, and of them, those not applied. */
  missed: number;
  notApplied: number;
  /** Tick rows of the old primary's term after the fault (a deposed primary's ticks): must be 0. */
  deposed: number;
}

type LapseFault = 'stop' | 'crash';

interface Child {
  readonly process: ChildProcess;
  readonly port: number;
  readonly output: string[];
}

export async function main(args: readonly string[]): Promise<number> {
  const options = parseOptions(args, OPTIONS);
  const ticks = integerOption(options, 'ticks', DEFAULTS.ticks);
  const kills = integerOption(options, 'kills', DEFAULTS.kills);
  const stops = integerOption(options, 'stops', DEFAULTS.stops);
  const stopS = integerOption(options, 'stop-s', DEFAULTS.stopS);
  const crashes = integerOption(options, 'crashes', DEFAULTS.crashes);
  const delayed = {
    count: integerOption(options, 'delayed', DEFAULTS.delayed),
    spreadS: integerOption(options, 'spread-s', DEFAULTS.spreadS),
    backend: delayedBackend(options.get('delayed-backend')),
  };
  process.stdout.write(machineAndLoad());
  return runMeasured<Report>({
    timeoutS: integerOption(options, 'timeout-s', DEFAULTS.timeoutS),
    tmpPrefix: 'baton-bench-schedules-',
    report: { delayed: {} },
    measure: async (report, parent, deadline) => {
      await measureLateness(report, parent, ticks, deadline);
      await measureCatchUp(report, parent, kills, deadline);
      report.stop = await measureLapse(parent, { fault: 'stop', times: stops, stopS }, deadline);
      report.crash = await measureLapse(parent, { fault: 'crash', times: crashes, stopS }, deadline);
      await measureDelayed(report.delayed, parent, delayed, deadline);
    },
    print: printReport,
    printJson: (report) => {
      const { delayed: late } = report;
      process.stdout.write(
        `${JSON.stringify({
          bench: NAME,
          tick_p50_ms: round(percentile(report.insert ?? [], 50)),
          tick_p99_ms: round(percentile(report.insert ?? [], 99)),
          wake_p99_ms: round(percentile(report.wake ?? [], 99)),
          timer_p99_ms: round(percentile(report.timer ?? [], 99)),
          catch_up_ms: round(percentile(report.catchUp ?? [], 50)),
          catch_up_max_ms: round(Math.max(...(report.catchUp ?? [Number.NaN]))),
          failover_ms: round(percentile(report.failover ?? [], 50)),
          ...lapseJson('stop', report.stop),
          ...lapseJson('crash_redis', report.crash),
          delayed_records: late.ran ?? null,
          delayed_sent: late.sent ?? null,
          delayed_twice: late.twice ?? null,
          delayed_early: late.early ?? null,
          delayed_p50_ms: round(late.p50Ms),
          delayed_p99_ms: round(late.p99Ms),
          delayed_backend: late.backend ?? null,
        })}\n`,
      );
    },
  });
}

async function measureLateness(
  report: Report,
  parent: string,
  ticks: number,
  deadline: Deadline,
): Promise<void> {
  const database = await createDatabase();
  try {
    const node = await startNode(parent, database, 'n1', 'skip');
    try {
      const db = await connect(database.url);
      try {
        const started = Date.now();
        process.stdout.write(`lateness: ${ticks} ticks of a 1-second schedule\n`);
        report.timer = await timerBaseline(ticks, deadline.signal);
        const rows = await waitForRows(db, `tick_time > to_timestamp(${started / 1000})`, ticks, deadline);
        report.wake = rows.map((row) => row.lateness);
        report.insert = rows.map((row) => row.insert);
      } finally {
        await db.end();
      }
    } finally {
      await stop(node);
    }
  } finally {
    await database.drop();
  }
}

async function measureCatchUp(
  report: Report,
  parent: string,
  kills: number,
  deadline: Deadline,
): Promise<void> {
  const database = await createDatabase();
  const nodes: Child[] = [];
  try {
    nodes.push(
      await startNode(parent, database, 'c1', 'all'),
      await startNode(parent, database, 'c2', 'all'),
    );
    const db = await connect(database.url);
    try {
      for (let kill = 0; kill < kills; kill++) {
        const primary = await primaryIndex(nodes, deadline);
        // Half a second after a tick, so that the next one falls while no primary acts.
        await pause(1_500 - (Date.now() % 1_000), deadline.signal);
        const killedAt = Date.now();
        nodes[primary]?.process.kill('SIGKILL');
        const [first] = await waitForRows(db, `tick_time > to_timestamp(${killedAt / 1000})`, 1, deadline);
        const fence = await db.query<{ raised: number }>(
          `SELECT (extract(epoch FROM raised_at) * 1000)::float8 AS raised FROM baton.baton_fence`,
        );
        (report.catchUp ??= []).push((first?.appliedAt ?? Number.NaN) - killedAt);
        (report.failover ??= []).push((fence.rows[0]?.raised ?? Number.NaN) - killedAt);
        process.stdout.write(
          `kill ${kill + 1}/${kills}: failover ${Math.round(report.failover.at(-1) ?? 0)} ms, first tick after ` +
            `the kill applied ${Math.round(report.catchUp.at(-1) ?? 0)} ms after it\n`,
        );
        // The killed node comes back, as a secondary.
        nodes[primary] = await startNode(parent, database, `c${primary + 1}`, 'all');
      }
    } finally {
      await db.end();
    }
  } finally {
    await Promise.all(nodes.map(stop));
    await database.drop();
  }
}

async function measureLapse(
  parent: string,
  settings: { readonly fault: LapseFault; readonly times: number; readonly stopS: number },
  deadline: Deadline,
): Promise<Lapse> {
  const lapse: Lapse = { failover: [], catchUp: [], missed: 0, notApplied: 0, deposed: 0 };
  const { fault } = settings;
  const database = await createDatabase();
  const elector = fault === 'stop' ? 'postgres' : 'redis';
  const start = (name: string): Promise<Child> => startNode(parent, database, name, 'all', elector);
  const nodes: Child[] = [];
  try {
    nodes.push(await start(`${fault}1`), await start(`${fault}2`));
    const db = await connect(database.url);
    try {
      for (let time = 0; time < settings.times; time++) {
        const index = await primaryIndex(nodes, deadline);
        const primary = nodes[index];
        if (!primary) throw new Error('no primary to stop');
        const before = await fence(db);
        // Half a second after a tick, as for the kills.
        await pause(1_500 - (Date.now() % 1_000), deadline.signal);
        const faultAt = Date.now();
        primary.process.kill(fault === 'stop' ? 'SIGSTOP' : 'SIGKILL');
        try {
          const raised = await waitForRaise(db, before.term, deadline);
          // The ticks that fell while no primary acted: after the fault, up to the new primary's fence raise.
          const missed = Math.floor(raised.raisedAt / TICK_MS) - Math.floor(faultAt / TICK_MS);
          const window = `tick_time > to_timestamp(${faultAt / 1000}) AND tick_time <= to_timestamp(${raised.raisedAt / 1000})`;
          const rows = await rowsWithin(db, window, missed, raised.raisedAt + 10_000, deadline);
          const failover = raised.raisedAt - faultAt;
          const last = rows.at(-1);
          lapse.missed += missed;
          lapse.notApplied += missed - rows.length;
          lapse.failover.push(failover);
          if (last && rows.length === missed) lapse.catchUp.push(last.appliedAt - faultAt);
          process.stdout.write(
            `${fault} ${time + 1}/${settings.times}: failover ${Math.round(failover)} ms, ${rows.length} of ` +
              `the ${missed} ticks that fell meanwhile applied` +
              (last ? `, the last ${Math.round(last.appliedAt - faultAt)} ms after the ${fault}` : '') +
              ` (goal ≤ failover + ${TICK_MS} ms)\n`,
          );
          await pause(faultAt + settings.stopS * 1_000 - Date.now(), deadline.signal);
        } finally {
          if (fault === 'stop') primary.process.kill('SIGCONT');
        }
        // The killed node comes back; the stopped one wakes up deposed. None of its ticks may land after the
        // fault.
        if (fault === 'crash') nodes[index] = await start(`${fault}${index + 1}`);
        await primaryIndex(nodes, deadline);
        await pause(2 * TICK_MS, deadline.signal);
        const deposed = await db.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM baton.baton_schedule_ticks
           WHERE term = $1 AND tick_time > to_timestamp(${faultAt / 1000})`,
          [before.term],
        );
        lapse.deposed += deposed.rows[0]?.n ?? 0;
      }
    } finally {
      await db.end();
    }
  } finally {
    await Promise.all(nodes.map(stop));
    await database.drop();
    if (elector === 'redis') {
      const redis = redisClient();
      await deleteKeys(redis, `baton:group:${database.name}:*`);
      redis.disconnect();
    }
  }
  return lapse;
}

interface Fence {
  readonly term: number;
  readonly raisedAt: number;
}

async function fence(db: Awaited<ReturnType<typeof connect>>): Promise<Fence> {
  const result = await db.query<{ term: string; raised: number }>(
    `SELECT term, (extract(epoch FROM raised_at) * 1000)::float8 AS raised FROM baton.baton_fence`,
  );
  const row = result.rows[0];
  if (!row) throw new Error('the group has no fence row yet');
  return { term: Number(row.term), raisedAt: Number(row.raised) };
}

/** Waits for the fence to be raised above `term`. */
async function waitForRaise(
  db: Awaited<ReturnType<typeof connect>>,
  term: number,
  deadline: Deadline,
): Promise<Fence> {
  for (;;) {
    deadline.check();
    const now = await fence(db);
    if (now.term > term) return now;
    await pause(20, deadline.signal);
  }
}

/** The tick rows matching `where`, once there are `count` of them or `until` (epoch ms) has passed. */
async function rowsWithin(
  db: Awaited<ReturnType<typeof connect>>,
  where: string,
  count: number,
  until: number,
  deadline: Deadline,
): Promise<TickRow[]> {
  for (;;) {
    deadline.check();
    const rows = await selectRows(db, where, count);
    if (rows.length >= count || Date.now() > until) return rows;
    await pause(20, deadline.signal);
  }
}

/** Under `missed = "all"`: faults whose last missed tick came later than the failover plus one tick. */
function goalMisses(lapse: Lapse | undefined): number | undefined {
  if (!lapse || lapse.catchUp.length === 0 || lapse.catchUp.length !== lapse.failover.length)
    return undefined;
  return lapse.catchUp.filter((catchUp, index) => catchUp > (lapse.failover[index] ?? 0) + TICK_MS).length;
}

function lapseJson(prefix: string, lapse: Lapse | undefined): Record<string, number | boolean | null> {
  const misses = goalMisses(lapse);
  return {
    [`${prefix}_catch_up_ms`]: round(percentile(lapse?.catchUp ?? [], 50)),
    [`${prefix}_catch_up_max_ms`]: round(lapse?.catchUp.length ? Math.max(...lapse.catchUp) : undefined),
    [`${prefix}_failover_ms`]: round(percentile(lapse?.failover ?? [], 50)),
    [`${prefix}_missed_ticks`]: lapse?.missed ?? null,
    [`${prefix}_not_applied`]: lapse?.notApplied ?? null,
    [`${prefix}_deposed_ticks`]: lapse?.deposed ?? null,
    [`${prefix}_goal_met`]: misses === undefined ? null : misses === 0,
  };
}

/** A figure for the JSON line: one decimal, null when not measured. */
function round(value: number | undefined): number | null {
  return value === undefined || !Number.isFinite(value) ? null : Math.round(value * 10) / 10;
}

function delayedBackend(text: string | undefined): DelayedBackend {
  if (text === undefined || text === 'store' || text === 'redis') return text ?? 'store';
  throw new UsageError(`--delayed-backend expects store or redis, got ${text}`);
}

interface TickRow {
  readonly lateness: number;
  readonly insert: number;
  readonly appliedAt: number;
}

/** Waits for `count` tick rows matching `where`, oldest first. */
async function waitForRows(
  db: Awaited<ReturnType<typeof connect>>,
  where: string,
  count: number,
  deadline: Deadline,
): Promise<TickRow[]> {
  for (;;) {
    deadline.check();
    const rows = await selectRows(db, where, count);
    if (rows.length >= count) return rows;
    await pause(100, deadline.signal);
  }
}

/** Up to `count` tick rows matching `where`, oldest first (none while the table is not there yet). */
async function selectRows(
  db: Awaited<ReturnType<typeof connect>>,
  where: string,
  count: number,
): Promise<TickRow[]> {
  const result = await db
    .query<{ lateness_ms: number; insert_ms: number; applied_ms: number }>(
      `SELECT lateness_ms, (extract(epoch FROM applied_at - tick_time) * 1000)::float8 AS insert_ms,
              (extract(epoch FROM applied_at) * 1000)::float8 AS applied_ms
       FROM baton.baton_schedule_ticks WHERE ${where} ORDER BY tick_time LIMIT ${count}`,
    )
    .catch(() => ({ rows: [] }));
  return result.rows.map((row) => ({
    lateness: Number(row.lateness_ms),
    insert: Number(row.insert_ms),
    appliedAt: Number(row.applied_ms),
  }));
}

/** The index in `nodes` of the one live node that says it is primary. */
async function primaryIndex(nodes: readonly Child[], deadline: Deadline): Promise<number> {
  for (;;) {
    deadline.check();
    const roles = await Promise.all(
      nodes.map(async (node) => {
        if (node.process.exitCode !== null || node.process.signalCode !== null) return undefined;
        const response = await request({
          port: node.port,
          method: 'GET',
          path: '/v1/cluster',
          signal: deadline.signal,
        }).catch(() => undefined);
        if (response?.status !== 200) return undefined;
        return (JSON.parse(response.body) as { role?: string }).role;
      }),
    );
    const primaries = roles.flatMap((role, index) => (role === 'primary' ? [index] : []));
    if (primaries.length === 1 && primaries[0] !== undefined) return primaries[0];
    await pause(100, deadline.signal);
  }
}

/** How late a setTimeout aimed at each of the next `ticks` second boundaries fires, in this process. */
async function timerBaseline(ticks: number, signal: AbortSignal): Promise<number[]> {
  const late: number[] = [];
  for (let tick = 0; tick < ticks && !signal.aborted; tick++) {
    const target = (Math.floor(Date.now() / 1_000) + 1) * 1_000;
    await pause(target - Date.now(), signal);
    late.push(Date.now() - target);
  }
  return late;
}

async function startNode(
  parent: string,
  database: FreshDatabase,
  name: string,
  missed: 'skip' | 'all',
  elector: 'postgres' | 'redis' = 'postgres',
): Promise<Child> {
  const dir = join(parent, `${database.name}-${name}`);
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const lines = groupNodeToml({
    name,
    dataDir: join(dir, 'data'),
    port,
    storeUrl: database.url,
    poolSize: 4,
    redisUrl: REDIS_URL,
    // The database's name is the group's: the redis elector's keys are then this run's own.
    group: { name: database.name, elector, leaseMs: 2_000, renewDeadlineMs: 1_200, heartbeatMs: 200 },
  });
  lines.push('', '[schedules.beat]', 'every = "1s"', `missed = "${missed}"`, 'event = { key = "beat" }');
  const config = join(dir, 'baton.toml');
  await writeFile(config, `${lines.join('\n').replace('level = "info"', 'level = "warn"')}\n`);
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'baton.js'), '-c', config, 'run'], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const output: string[] = [];
  child.stderr.setEncoding('utf8').on('data', (text: string) => output.push(text));
  await once(child, 'spawn');
  return { process: child, port, output };
}

async function stop(child: Child): Promise<void> {
  const proc = child.process;
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, 'exit');
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

function line(what: string, values: readonly number[] | undefined): string {
  if (!values || values.length === 0) return `${what}: none measured\n`;
  const at = (p: number): string => (percentile(values, p) ?? 0).toFixed(1);
  return `${what}: p50 ${at(50)} ms, p99 ${at(99)} ms, max ${Math.max(...values).toFixed(1)} ms (${values.length})\n`;
}

function formatLapse(fault: string, lapse: Lapse | undefined): string {
  if (!lapse) return `${fault}: none measured\n`;
  const misses = goalMisses(lapse);
  const goal =
    misses === undefined
      ? 'not measured'
      : `${misses === 0 ? 'met in all' : `missed in ${misses} of`} ${lapse.catchUp.length} faults`;
  return (
    line(`${fault}: failover (to the fence raised)`, lapse.failover) +
    line(`${fault}: last tick that fell meanwhile applied`, lapse.catchUp) +
    `${fault}: ticks that fell: ${lapse.missed}, not applied: ${lapse.notApplied}, applied by the old ` +
    `primary after the fault: ${lapse.deposed}; goal (catch-up ≤ failover + ${TICK_MS} ms): ${goal}\n`
  );
}

function printReport(report: Report): void {
  process.stdout.write(
    line('tick row inserted after its time', report.insert) +
      line('tick transaction started after its time', report.wake) +
      line('baseline: bare setTimeout after each second', report.timer) +
      line('failover (kill -9 to the fence raised)', report.failover) +
      line('first tick after the kill applied', report.catchUp) +
      formatLapse('SIGSTOP (postgres elector)', report.stop) +
      formatLapse('kill -9 (redis elector)', report.crash) +
      formatDelayed(report.delayed),
  );
}
