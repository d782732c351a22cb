// The pieces of the failover benchmark (bench/failover.ts): a group of Baton nodes run as child processes on
// this host, the `role …` lines of their pino logs parsed as they arrive, the primary they agree on through
// GET /v1/cluster, and the reigns rebuilt from those lines, whose intersections are the overlaps; and what
// both of its modes print (figures, the build, a failure).
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import type { Deadline, NodeChild } from './support.js';
import {
  DeadlineError,
  groupNodeToml,
  now,
  pause,
  request,
  ROOT,
  stopNodeChild,
  tomlString,
  waitForReady,
} from './support.js';

export type ElectorKind = 'postgres' | 'redis';
export const ELECTORS: readonly ElectorKind[] = ['postgres', 'redis'];

/** What the nodes of one measured group share. */
export interface GroupSettings {
  readonly elector: ElectorKind;
  readonly group: string;
  readonly storeUrl: string;
  readonly redisUrl: string;
  readonly leaseMs: number;
  readonly renewDeadlineMs: number;
  readonly heartbeatMs: number;
}

const HANDLER = join(ROOT, 'examples', 'quickstart', 'handlers', 'ping.ts');
/** Lines of a process's output kept for a failure report. */
const TAIL_LINES = 40;

/**
 * A role a node logged, timed by pino (`time`, epoch ms on this host's clock). `group` lines are the node's
 * `role <role> (term N, primary X): …`, logged once the role is applied (for a primary: after it raised the
 * fence); `elector` lines are the redis elector's own `redis elector: primary (elected: …)`, logged when it
 * won, before the fence (the postgres elector logs no such line at info).
 */
export interface RoleLine {
  readonly source: 'group' | 'elector';
  readonly node: string;
  /** The process that logged it (see NodeRun.id): a restarted node is a new process. */
  readonly run: number;
  readonly time: number;
  readonly role: string;
  readonly term: number;
  readonly cause: string;
}

/** One process of a node, from its spawn to its exit. */
export interface NodeRun {
  readonly id: number;
  readonly node: string;
  readonly child: NodeChild;
  /** Epoch ms just before this benchmark sent SIGKILL. */
  killedAt: number | undefined;
  /** Set when this benchmark asked it to stop (SIGTERM): its exit is then expected. */
  stopping: boolean;
  /** Epoch ms when this benchmark saw the exit. */
  exitedAt: number | undefined;
}

/** Every role line and every process of one group, in the order they came. */
export class GroupLog {
  readonly lines: RoleLine[] = [];
  readonly runs: NodeRun[] = [];

  /** Follows a new process of `node`: parses its stderr line by line and keeps a tail of its output. */
  follow(node: string, port: number, child: ChildProcess): NodeRun {
    const tail: string[] = [];
    const keep = (line: string): void => {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
    };
    const run: NodeRun = {
      id: this.runs.length + 1,
      node,
      child: { port, process: child, output: () => tail.join('\n') },
      killedAt: undefined,
      stopping: false,
      exitedAt: undefined,
    };
    this.runs.push(run);
    child.on('exit', () => (run.exitedAt = Date.now()));
    if (child.stdout) createInterface({ input: child.stdout }).on('line', keep);
    if (child.stderr) {
      createInterface({ input: child.stderr }).on('line', (text) => {
        keep(text);
        const line = parseRoleLine(text, node, run.id);
        if (line) this.lines.push(line);
      });
    }
    return run;
  }

  /** Throws when a process exited that this benchmark neither killed nor stopped, with its last output. */
  check(): void {
    const crashed = this.runs.find((run) => run.exitedAt !== undefined && !run.killedAt && !run.stopping);
    if (!crashed) return;
    const { exitCode, signalCode } = crashed.child.process;
    throw new Error(
      `node ${crashed.node} exited on its own (${exitCode ?? signalCode}); its last output:\n${crashed.child.output()}`,
    );
  }
}

/** A pino JSON line as a RoleLine, when it is one. */
export function parseRoleLine(text: string, node: string, run: number): RoleLine | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const fields = fieldsOf(value);
  const msg = fields.get('msg');
  const time = fields.get('time');
  const role = fields.get('role');
  const term = fields.get('term');
  const cause = fields.get('cause');
  if (typeof msg !== 'string' || typeof time !== 'number' || typeof role !== 'string') return undefined;
  if (typeof term !== 'number' || fields.get('component') !== 'group') return undefined;
  const source = msg.startsWith('role ')
    ? 'group'
    : msg.startsWith('redis elector: ')
      ? 'elector'
      : undefined;
  if (!source) return undefined;
  return { source, node, run, time, role, term, cause: typeof cause === 'string' ? cause : '' };
}

/** A parsed JSON object's fields, read without trusting their types. */
function fieldsOf(value: object): Map<string, unknown> {
  return new Map<string, unknown>(Object.entries(value));
}

/** One node of the group: its config file and port stay; each start is a new process (a NodeRun). */
export class GroupNode {
  readonly name: string;
  readonly port: number;
  readonly #config: string;
  readonly #log: GroupLog;
  #run: NodeRun | undefined;

  private constructor(name: string, port: number, config: string, log: GroupLog) {
    this.name = name;
    this.port = port;
    this.#config = config;
    this.#log = log;
  }

  /** Writes the node's config in `dir/<name>` (its data_dir is in there too). */
  static async create(
    dir: string,
    name: string,
    port: number,
    settings: GroupSettings,
    log: GroupLog,
  ): Promise<GroupNode> {
    const home = join(dir, name);
    await mkdir(home, { recursive: true });
    const config = join(home, 'baton.toml');
    await writeFile(config, nodeConfig(name, port, join(home, 'data'), settings));
    return new GroupNode(name, port, config, log);
  }

  /** The running process, if any. */
  get run(): NodeRun | undefined {
    return this.#run;
  }

  /** Starts a new process and waits for `/readyz`; resolves the milliseconds from spawn to ready. */
  async start(deadline: Deadline): Promise<number> {
    const started = now();
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'baton.js'), '-c', this.#config, 'run'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.#run = this.#log.follow(this.name, this.port, child);
    await once(child, 'spawn');
    await waitForReady(this.#run.child, deadline);
    return now() - started;
  }

  /** Sends SIGKILL; resolves the kill time (epoch ms, taken just before the signal) once the process is gone. */
  async kill(): Promise<number> {
    const run = this.#requireRun();
    const exited = once(run.child.process, 'exit');
    run.killedAt = Date.now();
    run.child.process.kill('SIGKILL');
    await exited;
    return run.killedAt;
  }

  /** SIGTERM, then SIGKILL after a grace period; nothing when no process runs. */
  async stop(): Promise<void> {
    const run = this.#run;
    if (!run || run.exitedAt !== undefined) return;
    run.stopping = true;
    await stopNodeChild(run.child, 10_000);
  }

  #requireRun(): NodeRun {
    if (!this.#run || this.#run.exitedAt !== undefined) throw new Error(`node ${this.name} is not running`);
    return this.#run;
  }
}

function nodeConfig(name: string, port: number, dataDir: string, settings: GroupSettings): string {
  const lines = [
    ...groupNodeToml({
      name,
      dataDir,
      port,
      storeUrl: settings.storeUrl,
      poolSize: 2,
      redisUrl: settings.redisUrl,
      group: {
        name: settings.group,
        elector: settings.elector,
        leaseMs: settings.leaseMs,
        renewDeadlineMs: settings.renewDeadlineMs,
        heartbeatMs: settings.heartbeatMs,
      },
    }),
    '',
    '[queues.ping]',
    `handler = ${tomlString(HANDLER)}`,
    'run_on = "primary"',
  ];
  return `${lines.join('\n')}\n`;
}

/** Polls `probe` every `everyMs` until it gives a value; fails after `timeoutMs` or at the deadline. */
export async function waitFor<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  options: {
    readonly deadline: Deadline;
    readonly timeoutMs: number;
    readonly what: string;
    everyMs?: number;
  },
): Promise<T> {
  const until = now() + options.timeoutMs;
  for (;;) {
    options.deadline.check();
    const value = await probe();
    if (value !== undefined) return value;
    if (now() > until) throw new Error(`no ${options.what} within ${options.timeoutMs} ms`);
    await pause(options.everyMs ?? 20, options.deadline.signal);
  }
}

/** The primary every running node names, with its term. */
export interface Agreement {
  readonly primary: string;
  readonly term: number;
}

interface ClusterView {
  readonly node: string;
  readonly role: string;
  readonly term: number;
  readonly primary: string | undefined;
}

/** Waits until every node runs and answers GET /v1/cluster with the same primary and term. */
export function agreedPrimary(
  nodes: readonly GroupNode[],
  log: GroupLog,
  deadline: Deadline,
  timeoutMs: number,
): Promise<Agreement> {
  return waitFor(
    async () => {
      log.check();
      const views = await Promise.all(nodes.map((node) => clusterView(node.port, deadline.signal)));
      return agreement(views);
    },
    { deadline, timeoutMs, what: 'primary agreed by every node', everyMs: 50 },
  );
}

function agreement(views: ReadonlyArray<ClusterView | undefined>): Agreement | undefined {
  const primaries = views.filter((view) => view?.role === 'primary');
  const [primary] = primaries;
  if (primaries.length !== 1 || !primary) return undefined;
  const agreed = views.every((view) => view?.primary === primary.node && view.term === primary.term);
  return agreed ? { primary: primary.node, term: primary.term } : undefined;
}

/** One node's GET /v1/cluster, or undefined when it does not answer (yet). */
async function clusterView(port: number, signal: AbortSignal): Promise<ClusterView | undefined> {
  const response = await request({ port, method: 'GET', path: '/v1/cluster', signal }).catch(
    (error: unknown) => {
      if (signal.aborted) throw error;
      return undefined;
    },
  );
  if (response?.status !== 200) return undefined;
  const value: unknown = JSON.parse(response.body);
  if (typeof value !== 'object' || value === null) return undefined;
  const fields = fieldsOf(value);
  const node = fields.get('node');
  const role = fields.get('role');
  const term = fields.get('term');
  const primary = fields.get('primary');
  if (typeof node !== 'string' || typeof role !== 'string' || typeof term !== 'number') return undefined;
  return { node, role, term, primary: typeof primary === 'string' ? primary : undefined };
}

/** One node's time as primary: [became primary, stepped down / was killed / exited]. */
export interface Reign {
  readonly node: string;
  readonly run: number;
  readonly term: number;
  readonly from: number;
  readonly to: number;
  readonly end: 'stepped down' | 'killed' | 'exited' | 'still primary';
}

/**
 * The reigns in every process's role lines: a `role primary` line opens one, the next other role closes it;
 * one still open closes at the process's kill, else its exit, else `endOfRun`.
 */
export function rebuildReigns(log: GroupLog, endOfRun: number): Reign[] {
  const reigns: Reign[] = [];
  for (const run of log.runs) {
    let open: RoleLine | undefined;
    for (const line of log.lines) {
      if (line.run !== run.id || line.source !== 'group') continue;
      if (line.role === 'primary') open ??= line;
      else if (open) {
        reigns.push(reign(open, line.time, 'stepped down'));
        open = undefined;
      }
    }
    if (!open) continue;
    if (run.killedAt !== undefined) reigns.push(reign(open, run.killedAt, 'killed'));
    else if (run.exitedAt !== undefined) reigns.push(reign(open, run.exitedAt, 'exited'));
    else reigns.push(reign(open, endOfRun, 'still primary'));
  }
  return reigns.sort((a, b) => a.from - b.from);
}

function reign(start: RoleLine, to: number, end: Reign['end']): Reign {
  return { node: start.node, run: start.run, term: start.term, from: start.time, to, end };
}

/** Two reigns of different nodes that intersect, and for how long. */
export interface Overlap {
  readonly first: Reign;
  readonly second: Reign;
  readonly ms: number;
}

/** Every pair of reigns of different nodes that intersect (touching at one millisecond is not counted). */
export function findOverlaps(reigns: readonly Reign[]): Overlap[] {
  const overlaps: Overlap[] = [];
  reigns.forEach((first, index) => {
    for (const second of reigns.slice(index + 1)) {
      if (first.node === second.node || !(first.from < second.to && second.from < first.to)) continue;
      overlaps.push({ first, second, ms: Math.min(first.to, second.to) - Math.max(first.from, second.from) });
    }
  });
  return overlaps;
}

/** The smallest gap from one reign's end to the start of the next one (negative: an overlap). */
export function narrowestGap(reigns: readonly Reign[]): number | undefined {
  let narrowest: number | undefined;
  for (let index = 1; index < reigns.length; index++) {
    const previous = reigns[index - 1] as Reign;
    const gap = (reigns[index] as Reign).from - previous.to;
    if (narrowest === undefined || gap < narrowest) narrowest = gap;
  }
  return narrowest;
}

/** The nearest-rank percentile `p` (0 < p ≤ 100) of `values`; undefined when there are none. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** p50, p90, p99, max (and min, mean) in ms, nearest rank: with fewer than 100 values p99 is the max. */
export function summary(values: readonly number[]): string {
  if (values.length === 0) return 'none measured';
  const mean = values.reduce((sum, value) => sum + value, 0) / values.length;
  const at = (p: number): number => Math.round(percentile(values, p) ?? 0);
  return (
    `p50 ${at(50)} ms, p90 ${at(90)} ms, p99 ${at(99)} ms, max ${at(100)} ms ` +
    `(min ${Math.round(Math.min(...values))}, mean ${Math.round(mean)}, n ${values.length})`
  );
}

/** The nodes run the compiled dist/: says when it was built, and warns when src/ changed after that. */
export async function buildNote(): Promise<string> {
  const [built, edited] = await Promise.all([newestChange('dist'), newestChange('src')]);
  const note = `nodes run dist/ (built ${new Date(built).toISOString()}; src/ changed ${new Date(edited).toISOString()})`;
  return edited > built ? `${note}\nWARNING: src/ changed after the build: run npm run build` : note;
}

/** The latest modification time (epoch ms) of the files under ROOT/`dir`; 0 when there are none. */
async function newestChange(dir: string): Promise<number> {
  const names = await readdir(join(ROOT, dir), { recursive: true }).catch(() => []);
  const stats = await Promise.all(names.map((name) => stat(join(ROOT, dir, name)).catch(() => undefined)));
  return Math.max(0, ...stats.map((info) => (info?.isFile() ? info.mtimeMs : 0)));
}

/** What stopped a benchmark early, for its last line: an interruption, its overall timeout, or an error. */
export function describeFailure(error: unknown, timeoutS: number, interrupted: boolean): string {
  if (interrupted) return 'INTERRUPTED';
  if (error instanceof DeadlineError) return `TIMEOUT: not finished within ${timeoutS} s`;
  return `FAILED: ${error instanceof Error ? error.message : String(error)}`;
}
