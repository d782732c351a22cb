// `npm run bench -- failover --mode partition`: partition failover of a group of three node processes, each in
// a network namespace of its own that reaches a private PostgreSQL server through a veth pair. The primary's
// namespace is cut again and again (nftables drops every packet: nothing is reset), then healed. Everything
// is timed on the server's clock: the cut is `clock_timestamp()` read just after the nft rule went in; the
// new primary's first act is the commit timestamp of the first fenced witness row of a newer term. Overlaps
// are judged on those commit timestamps: a row of a lower term committed after a newer term's first row.
// Postgres elector only (needs root, `ip` and `nft`).
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';

import pg from 'pg';

import type { Namespace } from '../test/support/netns.js';
import { createNamespace, removeLeftoverNamespaces } from '../test/support/netns.js';
import type { PrivatePostgres } from '../test/support/private-services.js';
import { startPrivatePostgres } from '../test/support/private-services.js';
import { buildNote, describeFailure, GroupLog, percentile, summary, waitFor } from './failover-support.js';
import {
  Deadline,
  describeMachine,
  formatMachine,
  pause,
  ROOT,
  stopNodeChild,
  tomlString,
} from './support.js';

/** The nodes' API listens on their namespace's address, not loopback: it wants a token. */
const TOKEN = 'bench-failover-partition';
/** The port every node listens on inside its own namespace. */
const HTTP_PORT = 7380;
const GROUP_SIZE = 3;
const WITNESS = join(ROOT, 'bench', 'chaos-fixtures', 'witness.ts');

export interface PartitionSettings {
  readonly cuts: number;
  readonly leaseMs: number;
  readonly renewDeadlineMs: number;
  readonly heartbeatMs: number;
  readonly settleMs: number;
}

/** One cut: whose, who took over, and when (ms from the cut, on the server's clock). */
export interface Cut {
  readonly from: string;
  readonly to: string;
  readonly term: number;
  /** Cut → the first commit of a witness row of the newer term. */
  readonly ms: number;
  /** The nft command that cut it, from the server's time read before it to the one read after it. */
  readonly cutMs: number;
  /** Cut → the new term's fence raise (its transaction's start, `raised_at`). */
  readonly raisedMs: number;
  /** The cut primary's step-down line minus the new primary's `role primary` line (host clock; < 0: first). */
  readonly stepDownLeadMs: number | undefined;
}

/** A witness row of a lower term committed after the first row of a higher one. */
export interface LateWrite {
  readonly term: number;
  readonly newerTerm: number;
  readonly rows: number;
  readonly worstMs: number;
}

export interface PartitionResult {
  readonly cuts: Cut[];
  lateWrites: LateWrite[];
  /** Terms whose witness rows came from more than one node. */
  sharedTerms: number[];
  rows: number;
}

interface PartitionNode {
  readonly name: string;
  readonly namespace: Namespace;
  readonly url: string;
  child?: ReturnType<typeof spawn>;
}

/** Sets up the namespaces, the server and the group, makes `settings.cuts` cuts, and removes it all. */
export async function measurePartitions(
  settings: PartitionSettings,
  result: PartitionResult,
  deadline: Deadline,
): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('partition mode needs root (ip netns, nft)');
  for (const name of await removeLeftoverNamespaces()) process.stdout.write(`removed leftover ${name}\n`);
  const namespaces: Namespace[] = [];
  const log = new GroupLog();
  const nodes: PartitionNode[] = [];
  let server: PrivatePostgres | undefined;
  let admin: pg.Client | undefined;
  const dir = await mkdtemp(join(os.tmpdir(), 'baton-bench-partition-'));
  try {
    for (let index = 1; index <= GROUP_SIZE; index++) namespaces.push(await createNamespace());
    server = await startPrivatePostgres({
      listen: [...namespaces.map((namespace) => namespace.hostAddress), '127.0.0.1'],
      settings: { track_commit_timestamp: 'on' },
    });
    admin = new pg.Client({ host: '127.0.0.1', port: server.port, user: 'postgres', database: 'postgres' });
    await admin.connect();
    await admin.query(
      `CREATE TABLE chaos_witness (node text NOT NULL, term bigint NOT NULL, at timestamptz NOT NULL);
       CREATE INDEX chaos_witness_term ON chaos_witness (term)`,
    );
    process.stdout.write(
      `\npartition mode: PostgreSQL ${server.port} on ${namespaces.map((n) => n.hostAddress).join(', ')}; ` +
        `namespaces ${namespaces.map((n) => n.name).join(', ')}\n`,
    );
    for (const [index, namespace] of namespaces.entries()) {
      const node: PartitionNode = {
        name: `n${index + 1}`,
        namespace,
        url: `http://${namespace.address}:${HTTP_PORT}`,
      };
      await writeNodeConfig(dir, node, server.port, settings);
      nodes.push(node);
    }
    // The first node alone creates the schema; then the others.
    const [first, ...others] = nodes;
    if (first) await startNode(dir, first, log, deadline);
    await Promise.all(others.map((node) => startNode(dir, node, log, deadline)));
    for (let index = 1; index <= settings.cuts; index++) {
      const cut = await cutPrimary(nodes, log, admin, settings, deadline);
      result.cuts.push(cut);
      printCut(index, settings.cuts, cut);
    }
  } finally {
    await Promise.all(nodes.map((node) => stopNode(node, log)));
    if (admin) await judgeWrites(admin, result).catch((error: unknown) => printFailure('judging', error));
    await admin?.end().catch(() => undefined);
    await Promise.all(namespaces.map((namespace) => namespace.dispose()));
    await server?.dispose().catch((error: unknown) => printFailure('stopping PostgreSQL', error));
    await rm(dir, { recursive: true, force: true });
  }
}

async function writeNodeConfig(
  dir: string,
  node: PartitionNode,
  port: number,
  settings: PartitionSettings,
): Promise<void> {
  const home = join(dir, node.name);
  await mkdir(home, { recursive: true });
  const lines = [
    '[node]',
    `name = ${tomlString(node.name)}`,
    `data_dir = ${tomlString(join(home, 'data'))}`,
    'shutdown_timeout_ms = 3000',
    '[log]',
    'level = "info"',
    '[http]',
    `host = ${tomlString(node.namespace.address)}`,
    `port = ${HTTP_PORT}`,
    `token = ${tomlString(TOKEN)}`,
    '[store]',
    `url = ${tomlString(`postgres://postgres@${node.namespace.hostAddress}:${port}/postgres`)}`,
    'pool_size = 2',
    '[group]',
    'name = "bench-partition"',
    'elector = "postgres"',
    `lease_ms = ${settings.leaseMs}`,
    `renew_deadline_ms = ${settings.renewDeadlineMs}`,
    `heartbeat_ms = ${settings.heartbeatMs}`,
    '[components.witness]',
    `module = ${tomlString(WITNESS)}`,
  ];
  await writeFile(join(home, 'baton.toml'), `${lines.join('\n')}\n`);
}

/** Starts the node inside its namespace, in a process group of its own, and waits for `/readyz`. */
async function startNode(dir: string, node: PartitionNode, log: GroupLog, deadline: Deadline): Promise<void> {
  const command = [
    process.execPath,
    join(ROOT, 'bin', 'baton.js'),
    '-c',
    join(dir, node.name, 'baton.toml'),
    'run',
  ];
  const [program, ...args] = node.namespace.exec(command);
  const child = spawn(program ?? 'ip', args, {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, CHAOS_NODE: node.name },
    detached: true,
  });
  node.child = child;
  log.follow(node.name, HTTP_PORT, child);
  await waitFor(
    async () => {
      log.check();
      return (await call(node, '/readyz', deadline.signal))?.status === 200 ? true : undefined;
    },
    { deadline, timeoutMs: 60_000, what: `${node.name} ready`, everyMs: 100 },
  );
}

async function stopNode(node: PartitionNode, log: GroupLog): Promise<void> {
  const child = node.child;
  const run = log.runs.find((candidate) => candidate.child.process === child);
  if (!child || !run || run.exitedAt !== undefined) return;
  run.stopping = true;
  await stopNodeChild(run.child, 10_000);
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  } catch {
    // The group is gone.
  }
}

async function call(node: PartitionNode, path: string, signal: AbortSignal): Promise<Response | undefined> {
  try {
    return await fetch(`${node.url}${path}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
      signal: AbortSignal.any([signal, AbortSignal.timeout(2000)]),
    });
  } catch {
    if (signal.aborted) throw new Error('the benchmark ran past its overall timeout');
    return undefined;
  }
}

/** Waits until every node names the same primary and term (GET /v1/cluster). */
async function agreedPrimary(
  nodes: readonly PartitionNode[],
  log: GroupLog,
  deadline: Deadline,
  timeoutMs: number,
): Promise<{ primary: string; term: number }> {
  return waitFor(
    async () => {
      log.check();
      const views = await Promise.all(
        nodes.map(async (node) => {
          const response = await call(node, '/v1/cluster', deadline.signal);
          if (response?.status !== 200) return undefined;
          return (await response.json()) as { node: string; role: string; term: number; primary?: string };
        }),
      );
      const primaries = views.filter((view) => view?.role === 'primary');
      const [primary] = primaries;
      if (primaries.length !== 1 || !primary) return undefined;
      const agreed = views.every((view) => view?.primary === primary.node && view.term === primary.term);
      return agreed ? { primary: primary.node, term: primary.term } : undefined;
    },
    { deadline, timeoutMs, what: 'primary agreed by every node', everyMs: 100 },
  );
}

/** Cuts the agreed primary's namespace, waits for a newer term's first witness row, heals, lets it settle. */
async function cutPrimary(
  nodes: readonly PartitionNode[],
  log: GroupLog,
  admin: pg.Client,
  settings: PartitionSettings,
  deadline: Deadline,
): Promise<Cut> {
  const timeoutMs = 10 * settings.leaseMs;
  const agreed = await agreedPrimary(nodes, log, deadline, timeoutMs);
  const victim = nodes.find((node) => node.name === agreed.primary);
  if (!victim) throw new Error(`the group names a primary ${agreed.primary} that is not one of its nodes`);
  const mark = log.lines.length;
  // The cut is the server's time once nft has put its rule in (packets are dropped by then); the nft command's
  // own time, from the server's time read just before it, is reported apart.
  const beforeCut = await serverTime(admin);
  await victim.namespace.cut();
  const cutAt = await serverTime(admin);
  try {
    const first = await waitFor(
      async () => {
        log.check();
        const rows = await admin.query<{ node: string; term: string; committed: number }>(
          `SELECT node, term, extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000 AS committed
             FROM chaos_witness WHERE term > $1 ORDER BY committed LIMIT 1`,
          [agreed.term],
        );
        return rows.rows[0];
      },
      { deadline, timeoutMs, what: `a newer term's witness row after cutting ${victim.name}`, everyMs: 20 },
    );
    const fence = await admin.query<{ raised: number }>(
      `SELECT extract(epoch FROM raised_at) * 1000 AS raised FROM baton.baton_fence WHERE term = $1`,
      [first.term],
    );
    const term = Number(first.term);
    const stepDown = log.lines
      .slice(mark)
      .find((line) => line.node === victim.name && line.source === 'group' && line.role !== 'primary');
    const takeOver = log.lines
      .slice(mark)
      .find((line) => line.source === 'group' && line.role === 'primary' && line.term === term);
    return {
      from: victim.name,
      to: first.node,
      term,
      ms: Math.round(Number(first.committed) - cutAt),
      cutMs: Math.round(cutAt - beforeCut),
      raisedMs: Math.round(Number(fence.rows[0]?.raised ?? NaN) - cutAt),
      stepDownLeadMs: stepDown && takeOver ? stepDown.time - takeOver.time : undefined,
    };
  } finally {
    await victim.namespace.heal();
    // Healed: the group agrees again (the old primary a secondary), then settles.
    await agreedPrimary(nodes, log, deadline, timeoutMs);
    await pause(settings.settleMs, deadline.signal);
  }
}

async function serverTime(admin: pg.Client): Promise<number> {
  const result = await admin.query<{ at: number }>(
    `SELECT extract(epoch FROM clock_timestamp()) * 1000 AS at`,
  );
  return Number(result.rows[0]?.at);
}

/** Late writes and shared terms, on the commit timestamps of every witness row. */
async function judgeWrites(admin: pg.Client, result: PartitionResult): Promise<void> {
  const late = await admin.query<{ term: string; newer: string; rows: number; worst: number }>(
    `WITH w AS (SELECT term, pg_xact_commit_timestamp(xmin) AS committed FROM chaos_witness),
          firsts AS (SELECT term, min(committed) AS first FROM w GROUP BY term)
     SELECT w.term, f.term AS newer, count(*)::int AS rows,
            extract(epoch FROM max(w.committed - f.first)) * 1000 AS worst
       FROM w JOIN firsts f ON f.term > w.term AND w.committed > f.first
      GROUP BY w.term, f.term ORDER BY w.term, f.term`,
  );
  result.lateWrites = late.rows.map((row) => ({
    term: Number(row.term),
    newerTerm: Number(row.newer),
    rows: row.rows,
    worstMs: Math.round(Number(row.worst)),
  }));
  const shared = await admin.query<{ term: string }>(
    'SELECT term FROM chaos_witness GROUP BY term HAVING count(DISTINCT node) > 1 ORDER BY term',
  );
  result.sharedTerms = shared.rows.map((row) => Number(row.term));
  const count = await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM chaos_witness');
  result.rows = count.rows[0]?.n ?? 0;
}

function printCut(index: number, cuts: number, cut: Cut): void {
  const lead =
    cut.stepDownLeadMs === undefined ? '' : `; ${cut.from} stepped down ${-cut.stepDownLeadMs} ms before`;
  process.stdout.write(
    `  cut ${index}/${cuts}: ${cut.from} → ${cut.to} (term ${cut.term}) in ${cut.ms} ms ` +
      `(fence raised at ${cut.raisedMs} ms${lead})\n`,
  );
}

function printFailure(what: string, error: unknown): void {
  process.stdout.write(`${what} failed: ${error instanceof Error ? error.message : String(error)}\n`);
}

/** The overlaps: late writes, plus terms written by two nodes. */
function overlapCount(result: PartitionResult): number {
  return result.lateWrites.length + result.sharedTerms.length;
}

function partitionLines(settings: PartitionSettings, result: PartitionResult): string[] {
  const times = result.cuts.map((cut) => cut.ms);
  const bound = settings.leaseMs + settings.heartbeatMs;
  const p99 = percentile(times, 99);
  const verdict =
    p99 === undefined
      ? 'not measured'
      : p99 <= bound
        ? `within (p99 ${p99} ms)`
        : `p99 ${p99} ms, ${p99 - bound} ms past it (ending the old sessions, raising the fence, the first commit)`;
  const leads = result.cuts.flatMap((cut) => (cut.stepDownLeadMs === undefined ? [] : [cut.stepDownLeadMs]));
  const lines = [
    '',
    `postgres elector, partition: ${times.length} cuts (nft drop in the primary's namespace)`,
    `  failover (cut → first commit of the new term's witness row, server clock): ${summary(times)}`,
    `    of which cut → fence raise started: ${summary(result.cuts.map((cut) => cut.raisedMs))}`,
    `    and fence raise started → first row committed: ${summary(result.cuts.map((cut) => cut.ms - cut.raisedMs))}`,
    `  the nft command itself (not counted above): ${summary(result.cuts.map((cut) => cut.cutMs))}`,
    `  each, in cut order (ms): ${times.join(' ')}`,
    `  against lease_ms + heartbeat_ms = ${bound} ms: ${verdict}`,
    `  the cut primary logged its step-down before the new primary acted in ` +
      `${leads.filter((lead) => lead < 0).length} of ${leads.length} cuts`,
    `  witness rows: ${result.rows}; overlaps on commit timestamps (late rows of an older term, terms written ` +
      `by two nodes): ${overlapCount(result)}`,
  ];
  for (const late of result.lateWrites.slice(0, 10)) {
    lines.push(
      `    LATE: ${late.rows} rows of term ${late.term} after term ${late.newerTerm}'s first (worst ${late.worstMs} ms)`,
    );
  }
  for (const term of result.sharedTerms.slice(0, 10))
    lines.push(`    SHARED: term ${term} written by two nodes`);
  return lines;
}

/** `npm run bench -- failover --mode partition`: prints the preamble, measures, prints the figures and the JSON line. */
export async function runPartitionMode(
  settings: PartitionSettings & { readonly timeoutS: number },
): Promise<number> {
  const deadline = new Deadline(settings.timeoutS * 1000);
  const interrupted = { yes: false };
  const onSignal = (): void => {
    interrupted.yes = true;
    deadline.cancel();
  };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  const result: PartitionResult = { cuts: [], lateWrites: [], sharedTerms: [], rows: 0 };
  let failure: string | undefined;
  try {
    const load = os
      .loadavg()
      .map((value) => value.toFixed(2))
      .join(' ');
    process.stdout.write(
      `failover --mode partition: ${GROUP_SIZE} node processes (postgres elector), each in a network namespace ` +
        `of its own; ${settings.cuts} cuts of the primary's namespace (nft drop), each healed before the next\n` +
        `settings: [group] lease_ms = ${settings.leaseMs}, renew_deadline_ms = ${settings.renewDeadlineMs}, ` +
        `heartbeat_ms = ${settings.heartbeatMs}; [store] pool_size = 2 on a private PostgreSQL ` +
        `(track_commit_timestamp = on); a fenced witness component writing every 20 ms; ` +
        `${settings.settleMs} ms settle after each heal\nload average at start: ${load}\n${await buildNote()}\n`,
    );
    await measurePartitions(settings, result, deadline);
  } catch (error) {
    failure = describeFailure(error, settings.timeoutS, interrupted.yes);
  } finally {
    deadline.dispose();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
  process.stdout.write(`${partitionLines(settings, result).join('\n')}\n`);
  process.stdout.write(`${formatMachine(describeMachine())}\n`);
  if (failure) process.stdout.write(`${failure}; the figures above are partial\n`);
  const times = result.cuts.map((cut) => cut.ms);
  const line = {
    bench: 'failover',
    mode: 'partition',
    elector: 'postgres',
    cuts: times.length,
    p50_ms: percentile(times, 50) ?? null,
    p99_ms: percentile(times, 99) ?? null,
    max_ms: percentile(times, 100) ?? null,
    bound_ms: settings.leaseMs + settings.heartbeatMs,
    overlaps: overlapCount(result),
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
  return failure !== undefined || overlapCount(result) > 0 ? 1 : 0;
}
