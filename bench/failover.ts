// `npm run bench -- failover`: crash failover of a group of three node processes on one host. The primary is
// killed with SIGKILL again and again; each failover is the time from the kill to the new primary's
// `role primary` log line, and the reigns rebuilt from every node's log are checked for overlaps. The postgres
// elector first, then the redis elector. Baseline of the same run: restarting the killed node (spawn → ready).
// `--mode partition` (the default is `--mode crash`, the above) cuts the primary off instead: each node runs
// in a network namespace of its own, nftables drops every packet of the primary's (`--cuts`, default 30),
// then heals it; failover and overlaps are judged on PostgreSQL's clock (bench/failover-partition.ts).
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { runPartitionMode } from './failover-partition.js';
import type { ElectorKind, GroupSettings, Overlap, Reign } from './failover-support.js';
import {
  agreedPrimary,
  buildNote,
  describeFailure,
  ELECTORS,
  findOverlaps,
  GroupLog,
  GroupNode,
  narrowestGap,
  percentile,
  rebuildReigns,
  summary,
  waitFor,
} from './failover-support.js';
import {
  createDatabase,
  deleteKeys,
  describeServers,
  randomSuffix,
  REDIS_URL,
  redisClient,
} from './redis-pg.js';
import {
  Deadline,
  describeMachine,
  formatMachine,
  freePort,
  integerOption,
  parseOptions,
  pause,
  UsageError,
} from './support.js';

const NAME = 'failover';
const OPTIONS = [
  'mode',
  'kills',
  'cuts',
  'elector',
  'lease-ms',
  'renew-deadline-ms',
  'heartbeat-ms',
  'settle-ms',
  'timeout-s',
] as const;
const DEFAULTS = {
  kills: 30,
  cuts: 30,
  leaseMs: 2000,
  renewDeadlineMs: 1200,
  heartbeatMs: 200,
  /** Pause after the group agrees again on a primary once the killed node is back, before the next kill. */
  settleMs: 1000,
  timeoutS: 720,
} as const;
const GROUP_SIZE = 3;
/** The goal for a crash on the postgres elector. */
const POSTGRES_GOAL_P99_MS = 250;
/** Peers' crash failover with their defaults (bench reference: peers-and-limits.md §2.8; derived, not run). */
const PEERS = [
  'Kubernetes Lease (client-go 15 s / 10 s / 2 s): ~15–20 s',
  'etcd election (session TTL 60 s): ~60 s',
  'Consul session: TTL (10 s at least) + lock-delay 15 s',
  'Patroni (ttl 30, loop_wait 10): up to ~40 s',
  'Redis SET NX PX lease (redis-leader: ttl 10 s): ~10 s',
] as const;
const KUBERNETES_MS = 15_000;

type Settings = ReturnType<typeof readSettings>;

/** One kill: who was killed, who took over, and when (ms from the kill). */
interface Failover {
  readonly from: string;
  readonly to: string;
  readonly term: number;
  readonly ms: number;
  /** The redis elector's own `primary` line: when it won, before the fence was raised. */
  readonly electedMs: number | undefined;
}

interface ElectorResult {
  readonly elector: ElectorKind;
  readonly failovers: Failover[];
  /** Restarts of killed nodes, spawn → /readyz 200, in ms: the baseline. */
  readonly restarts: number[];
  reigns: Reign[];
  overlaps: Overlap[];
  runs: number;
}

export async function main(args: readonly string[]): Promise<number> {
  const settings = readSettings(args);
  if (settings.mode === 'partition') return runPartitionMode(settings);
  const deadline = new Deadline(settings.timeoutS * 1000);
  const interrupted = { yes: false };
  const onSignal = (): void => {
    interrupted.yes = true;
    deadline.cancel();
  };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  const results: ElectorResult[] = [];
  let failure: string | undefined;
  try {
    await printPreamble(settings);
    for (const elector of settings.electors) {
      const result: ElectorResult = {
        elector,
        failovers: [],
        restarts: [],
        reigns: [],
        overlaps: [],
        runs: 0,
      };
      results.push(result);
      await measureElector(settings, result, deadline);
    }
  } catch (error) {
    failure = describeFailure(error, settings.timeoutS, interrupted.yes);
  } finally {
    deadline.dispose();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
  for (const result of results) printResult(settings, result);
  process.stdout.write(`${formatMachine(describeMachine())}\n`);
  if (failure) process.stdout.write(`${failure}; the figures above are partial\n`);
  printJson(results);
  const overlaps = results.reduce((sum, result) => sum + result.overlaps.length, 0);
  return failure !== undefined || overlaps > 0 ? 1 : 0;
}

function readSettings(args: readonly string[]) {
  const options = parseOptions(args, OPTIONS);
  const elector = options.get('elector') ?? 'both';
  const electors = elector === 'both' ? ELECTORS : ELECTORS.filter((kind) => kind === elector);
  if (electors.length === 0)
    throw new UsageError(`--elector expects postgres, redis or both, got ${elector}`);
  const mode = options.get('mode') ?? 'crash';
  if (mode !== 'crash' && mode !== 'partition')
    throw new UsageError(`--mode expects crash or partition, got ${mode}`);
  if (mode === 'partition' && elector !== 'postgres' && options.has('elector'))
    throw new UsageError('--mode partition measures the postgres elector only');
  const settings = {
    mode,
    kills: integerOption(options, 'kills', DEFAULTS.kills),
    cuts: integerOption(options, 'cuts', DEFAULTS.cuts),
    electors,
    leaseMs: integerOption(options, 'lease-ms', DEFAULTS.leaseMs),
    renewDeadlineMs: integerOption(options, 'renew-deadline-ms', DEFAULTS.renewDeadlineMs),
    heartbeatMs: integerOption(options, 'heartbeat-ms', DEFAULTS.heartbeatMs),
    settleMs: integerOption(options, 'settle-ms', DEFAULTS.settleMs),
    timeoutS: integerOption(options, 'timeout-s', DEFAULTS.timeoutS),
  };
  if (!(settings.heartbeatMs < settings.renewDeadlineMs && settings.renewDeadlineMs < settings.leaseMs))
    throw new UsageError('expected heartbeat-ms < renew-deadline-ms < lease-ms');
  return settings;
}

async function printPreamble(settings: Settings): Promise<void> {
  const redis = redisClient();
  try {
    process.stdout.write(`${await describeServers(redis)}\n`);
  } finally {
    redis.disconnect();
  }
  const load = os
    .loadavg()
    .map((value) => value.toFixed(2))
    .join(' ');
  process.stdout.write(
    `${NAME}: ${GROUP_SIZE} node processes per elector (${settings.electors.join(', ')}), ` +
      `${settings.kills} kill -9 of the primary each\n` +
      `settings: [group] lease_ms = ${settings.leaseMs}, renew_deadline_ms = ${settings.renewDeadlineMs}, ` +
      `heartbeat_ms = ${settings.heartbeatMs}; [store] pool_size = 2 (a fresh database per elector); ` +
      `one queue (quickstart ping handler, run_on = "primary"); ${settings.settleMs} ms settle after each restart\n` +
      `load average at start: ${load}\n${await buildNote()}\n`,
  );
}

/** A fresh database, group and folder; three nodes; `kills` failovers; then everything is removed. */
async function measureElector(settings: Settings, result: ElectorResult, deadline: Deadline): Promise<void> {
  const database = await createDatabase();
  const dir = await mkdtemp(join(os.tmpdir(), 'baton-bench-failover-'));
  const group = `bench-failover-${randomSuffix()}`;
  const log = new GroupLog();
  const nodes: GroupNode[] = [];
  process.stdout.write(`\n${result.elector} elector: group ${group}, database ${database.name}\n`);
  try {
    const groupSettings: GroupSettings = {
      ...settings,
      elector: result.elector,
      group,
      storeUrl: database.url,
      redisUrl: REDIS_URL,
    };
    for (let index = 1; index <= GROUP_SIZE; index++) {
      nodes.push(await GroupNode.create(dir, `n${index}`, await freePort(), groupSettings, log));
    }
    await startGroup(nodes, deadline);
    for (let index = 1; index <= settings.kills; index++) {
      const failover = await killPrimary(nodes, log, settings, deadline);
      result.failovers.push(failover);
      result.restarts.push(await restartKilled(nodes, failover.from, log, settings, deadline));
      printKill(index, settings.kills, failover, result.restarts.at(-1));
    }
  } finally {
    await Promise.all(nodes.map((node) => node.stop()));
    result.reigns = rebuildReigns(log, Date.now());
    result.overlaps = findOverlaps(result.reigns);
    result.runs = log.runs.length;
    await cleanUp(group, dir, () => database.drop());
  }
}

/** Starts the first node alone (it creates the schema), then the two others together. */
async function startGroup(nodes: readonly GroupNode[], deadline: Deadline): Promise<void> {
  const [first, ...others] = nodes;
  await first?.start(deadline);
  await Promise.all(others.map((node) => node.start(deadline)));
}

/** Kills the agreed primary and waits for another node's `role primary` line. */
async function killPrimary(
  nodes: readonly GroupNode[],
  log: GroupLog,
  settings: Settings,
  deadline: Deadline,
): Promise<Failover> {
  const agreed = await agreedPrimary(nodes, log, deadline, 10 * settings.leaseMs);
  const victim = nodeNamed(nodes, agreed.primary);
  const mark = log.lines.length;
  const killedAt = await victim.kill();
  const taken = await waitFor(
    () => {
      log.check();
      return log.lines
        .slice(mark)
        .find((line) => line.source === 'group' && line.role === 'primary' && line.node !== victim.name);
    },
    {
      deadline,
      timeoutMs: 10 * settings.leaseMs,
      what: `new primary after killing ${victim.name}`,
      everyMs: 5,
    },
  );
  const elected = log.lines
    .slice(mark)
    .find((line) => line.source === 'elector' && line.role === 'primary' && line.run === taken.run);
  return {
    from: victim.name,
    to: taken.node,
    term: taken.term,
    ms: taken.time - killedAt,
    electedMs: elected ? elected.time - killedAt : undefined,
  };
}

/** Starts the killed node again, waits until all agree on the primary, then lets the group settle. */
async function restartKilled(
  nodes: readonly GroupNode[],
  name: string,
  log: GroupLog,
  settings: Settings,
  deadline: Deadline,
): Promise<number> {
  const restartMs = await nodeNamed(nodes, name).start(deadline);
  await agreedPrimary(nodes, log, deadline, 10 * settings.leaseMs);
  await pause(settings.settleMs, deadline.signal);
  return restartMs;
}

function nodeNamed(nodes: readonly GroupNode[], name: string): GroupNode {
  const node = nodes.find((candidate) => candidate.name === name);
  if (!node) throw new Error(`the group names a primary ${name} that is not one of its nodes`);
  return node;
}

/** Drops the database, deletes the group's Redis keys and the folder; a failure is printed, not thrown. */
async function cleanUp(group: string, dir: string, dropDatabase: () => Promise<void>): Promise<void> {
  const redis = redisClient();
  const steps = [
    dropDatabase(),
    deleteKeys(redis, `baton:group:${group}:*`),
    rm(dir, { recursive: true, force: true }),
  ];
  for (const outcome of await Promise.allSettled(steps)) {
    if (outcome.status === 'rejected') process.stdout.write(`cleanup failed: ${String(outcome.reason)}\n`);
  }
  redis.disconnect();
}

function printKill(index: number, kills: number, failover: Failover, restartMs: number | undefined): void {
  const elected = failover.electedMs === undefined ? '' : ` (elector won at ${failover.electedMs} ms)`;
  const restart = restartMs === undefined ? '' : `; restarted, ready in ${Math.round(restartMs)} ms`;
  const { from, to, term, ms } = failover;
  process.stdout.write(
    `  kill ${index}/${kills}: ${from} → ${to} (term ${term}) in ${ms} ms${elected}${restart}\n`,
  );
}

function printResult(settings: Settings, result: ElectorResult): void {
  const times = result.failovers.map((failover) => failover.ms);
  const lines = [
    '',
    `${result.elector} elector: ${times.length} kills`,
    `  failover (kill -9 → the new primary's "role primary" line): ${summary(times)}`,
  ];
  const won = result.failovers.flatMap(({ electedMs, ms }) =>
    electedMs === undefined ? [] : [{ electedMs, ms }],
  );
  if (won.length > 0) {
    lines.push(`    of which kill → elector won: ${summary(won.map(({ electedMs }) => electedMs))}`);
    lines.push(
      `    and won → fence raised and logged: ${summary(won.map(({ electedMs, ms }) => ms - electedMs))}`,
    );
  }
  if (times.length > 0) lines.push(`  each, in kill order (ms): ${times.join(' ')}`);
  const restartP50 = percentile(result.restarts, 50);
  lines.push(
    `  baseline, same run: restarting the killed node (spawn → /readyz 200): ${summary(result.restarts)}`,
  );
  const p50 = percentile(times, 50);
  if (p50 && restartP50) lines.push(`  ratio restart p50 / failover p50: ${(restartP50 / p50).toFixed(1)}`);
  lines.push(...overlapLines(result), ...goalLines(settings, result.elector, percentile(times, 99)));
  process.stdout.write(`${lines.join('\n')}\n`);
}

function overlapLines(result: ElectorResult): string[] {
  const gap = narrowestGap(result.reigns);
  const lines = [
    `  reigns rebuilt from the logs of ${result.runs} node processes: ${result.reigns.length}; ` +
      `overlaps (reigns of different nodes that intersect): ${result.overlaps.length}` +
      (gap === undefined ? '' : `; narrowest gap from one reign's end to the next's start: ${gap} ms`),
  ];
  const reign = (r: Reign): string => `${r.node} term ${r.term} [${r.from}, ${r.to}] (${r.end})`;
  for (const { ms, first, second } of result.overlaps.slice(0, 10)) {
    lines.push(`    OVERLAP of ${ms} ms: ${reign(first)} and ${reign(second)}`);
  }
  return lines;
}

function goalLines(settings: Settings, elector: ElectorKind, p99: number | undefined): string[] {
  const bound = elector === 'postgres' ? POSTGRES_GOAL_P99_MS : settings.leaseMs + settings.heartbeatMs;
  const verdict = p99 === undefined ? 'not measured' : `${p99 <= bound ? 'met' : 'MISSED'} (p99 ${p99} ms)`;
  const lines =
    elector === 'postgres'
      ? [`  goal: p99 ≤ ${bound} ms on a crash: ${verdict}`]
      : [
          `  bound: p99 ≤ lease_ms + heartbeat_ms = ${bound} ms: ${verdict}`,
          `  the lease bounds it: a killed primary cannot release its lease, so the others wait for it to expire ` +
            `(lease_ms = ${settings.leaseMs} ms after its last renewal) and take it at their next look`,
        ];
  lines.push(`  peers, crash failover with their defaults (derived; peers-and-limits.md §2.8):`);
  lines.push(...PEERS.map((peer) => `    ${peer}`));
  if (p99) lines.push(`  ratio Kubernetes low end (15 s) / this p99: ${Math.round(KUBERNETES_MS / p99)}`);
  return lines;
}

/** The closing lines: one JSON object per elector measured. */
function printJson(results: readonly ElectorResult[]): void {
  for (const result of results) {
    const times = result.failovers.map((failover) => failover.ms);
    const line = {
      bench: NAME,
      elector: result.elector,
      kills: times.length,
      p50_ms: percentile(times, 50) ?? null,
      p99_ms: percentile(times, 99) ?? null,
      max_ms: percentile(times, 100) ?? null,
      overlaps: result.overlaps.length,
    };
    process.stdout.write(`${JSON.stringify(line)}\n`);
  }
}

const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  try {
    process.exitCode = await main(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${NAME}: ${error.message}\n`);
    process.exitCode = 2;
  }
}
