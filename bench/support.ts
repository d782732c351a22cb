// Shared pieces of the benchmarks: a free loopback port, a Baton node started as a child process from a
// temporary config, readiness and JSON calls over HTTP, a deadline, and the machine's description that
// every result is printed with.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { createServer } from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (the folder holding bin/ and examples/). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The loopback address every benchmark talks to. */
export const LOOPBACK = '127.0.0.1';

/** Thrown by waits and loops when the benchmark's overall deadline has passed. */
export class DeadlineError extends Error {
  override readonly name = 'DeadlineError';
}

/**
 * The overall time limit of a benchmark. Its signal aborts I/O waits; since a loop of promise-only work
 * (PGlite runs in this thread) never lets the timer fire, such loops call check(), which also reads the clock.
 */
export class Deadline {
  readonly #controller = new AbortController();
  readonly #at: number;
  readonly #timer: NodeJS.Timeout;

  constructor(ms: number) {
    this.#at = now() + ms;
    this.#timer = setTimeout(() => this.#controller.abort(), ms);
  }

  get signal(): AbortSignal {
    if (!this.#controller.signal.aborted && now() > this.#at) this.#controller.abort();
    return this.#controller.signal;
  }

  /** Ends the time now, e.g. on SIGINT: every wait fails as if the deadline had passed, and cleanup runs. */
  cancel(): void {
    this.#controller.abort();
  }

  /** Throws a DeadlineError once the time is up. */
  check(): void {
    if (this.signal.aborted) throw new DeadlineError('the benchmark ran past its overall timeout');
  }

  dispose(): void {
    clearTimeout(this.#timer);
  }
}

/** A port that was free on the loopback address a moment ago. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, LOOPBACK);
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (typeof address !== 'object' || address === null) throw new Error('no port was assigned');
  return address.port;
}

export interface MachineDescription {
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly node: string;
  readonly os: string;
}

export function describeMachine(): MachineDescription {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
  };
}

/** The machine and its load average now: the first lines a benchmark prints. */
export function machineAndLoad(): string {
  const load = os
    .loadavg()
    .map((value) => value.toFixed(2))
    .join(' ');
  return `${formatMachine(describeMachine())}\nload average: ${load}\n`;
}

export function formatMachine(machine: MachineDescription): string {
  return `machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Node ${machine.node}, ${machine.os}`;
}

/**
 * CPU seconds (user + system) a process has used so far, read from /proc on Linux; undefined elsewhere.
 * Compared with the wall time of a window it tells whether that process was the bottleneck.
 */
export async function processCpuSeconds(pid: number): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return Number.isFinite(ticks) ? ticks / CLOCK_TICKS_PER_SECOND : undefined;
  } catch {
    return undefined;
  }
}

/** USER_HZ: the unit of /proc/<pid>/stat times; 100 on every mainstream Linux build. */
const CLOCK_TICKS_PER_SECOND = 100;

/** CPU seconds (user + system) this process has used so far. */
export function ownCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

/** Milliseconds since an arbitrary origin, with sub-millisecond resolution. */
export function now(): number {
  return performance.now();
}

/** The monotonic clock in microseconds, as V8's CPU profiles time their samples (bench/profile-top.ts). */
export function monotonicMicros(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Formats a rate with thousands separators, e.g. 12,345. */
export function formatRate(perSecond: number): string {
  return Math.round(perSecond).toLocaleString('en-US');
}

/** Resolves after `ms`, or rejects with a DeadlineError when `signal` fires first. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolvePause, reject) => {
    if (signal.aborted) return reject(new DeadlineError('the benchmark ran past its overall timeout'));
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', abort);
      resolvePause();
    }, ms);
    const abort = (): void => {
      clearTimeout(timer);
      reject(new DeadlineError('the benchmark ran past its overall timeout'));
    };
    signal.addEventListener('abort', abort, { once: true });
  });
}

export interface HttpResponse {
  readonly status: number;
  readonly body: string;
}

export interface HttpRequest {
  readonly port: number;
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly body?: Buffer;
  readonly contentType?: string;
  /** Further request headers, e.g. `Baton-Envelope`. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly agent?: http.Agent;
  readonly signal: AbortSignal;
}

/** One HTTP request to the loopback address; the whole response body is read as text. */
export function request(options: HttpRequest): Promise<HttpResponse> {
  return new Promise((resolveRequest, reject) => {
    const headers: http.OutgoingHttpHeaders = { ...options.headers };
    if (options.body) {
      headers['content-type'] = options.contentType ?? 'application/octet-stream';
      headers['content-length'] = options.body.length;
    }
    const req = http.request(
      {
        host: LOOPBACK,
        port: options.port,
        method: options.method,
        path: options.path,
        headers,
        agent: options.agent ?? false,
        signal: options.signal,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolveRequest({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', (error) => reject(options.signal.aborted ? new DeadlineError(error.message) : error));
    req.end(options.body);
  });
}

/** Runs one statement through the node's `POST /v1/sql` and returns its rows. */
export async function nodeSql(
  port: number,
  sql: string,
  signal: AbortSignal,
): Promise<Array<Record<string, unknown>>> {
  const body = Buffer.from(JSON.stringify({ sql }));
  const response = await request({
    port,
    method: 'POST',
    path: '/v1/sql',
    body,
    contentType: 'application/json',
    signal,
  });
  if (response.status !== 200) throw new Error(`POST /v1/sql answered ${response.status}: ${response.body}`);
  return parseRows(response.body);
}

function parseRows(text: string): Array<Record<string, unknown>> {
  const value: unknown = JSON.parse(text);
  if (typeof value !== 'object' || value === null || !('rows' in value) || !Array.isArray(value.rows)) {
    throw new Error(`unexpected answer from /v1/sql: ${text.slice(0, 200)}`);
  }
  return value.rows.filter((row): row is Record<string, unknown> => typeof row === 'object' && row !== null);
}

/** Reads one integer column of the first row of a `/v1/sql` answer. */
export async function nodeCount(port: number, sql: string, signal: AbortSignal): Promise<number> {
  const [row] = await nodeSql(port, sql, signal);
  const value = Number(row?.['count']);
  if (!Number.isInteger(value)) throw new Error(`"${sql}" gave no integer column "count"`);
  return value;
}

export interface NodeChildOptions {
  /** Folder for the config file and the node's data_dir; the caller creates and deletes it. */
  readonly dir: string;
  readonly port: number;
  /** The queues: name → absolute handler path, with extra TOML lines for the queue's table. */
  readonly queues: ReadonlyArray<{
    readonly name: string;
    readonly handler: string;
    readonly extra?: string;
  }>;
  /** Further top-level TOML tables (e.g. `[store]`, `[redis]`), written before the queues. */
  readonly extraToml?: string;
  /** Options for the child's `node`, e.g. ["--cpu-prof"] (Node 20 refuses that one in NODE_OPTIONS). */
  readonly nodeArgs?: readonly string[];
}

/** A node running as a child process; `output` keeps what it wrote, for failure reports. */
export interface NodeChild {
  readonly port: number;
  readonly process: ChildProcess;
  readonly output: () => string;
}

/** Writes a config and starts `node bin/baton.js -c <config> run`; resolves once the process has spawned. */
export async function startNodeChild(options: NodeChildOptions): Promise<NodeChild> {
  const config = join(options.dir, 'baton.toml');
  await writeFile(config, nodeConfig(options));
  const args = [...(options.nodeArgs ?? []), join(ROOT, 'bin', 'baton.js'), '-c', config, 'run'];
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  child.stdout.setEncoding('utf8').on('data', (text: string) => output.push(text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => output.push(text));
  await once(child, 'spawn');
  return { port: options.port, process: child, output: () => output.join('') };
}

function nodeConfig(options: NodeChildOptions): string {
  const lines = [
    '[node]',
    'name = "bench"',
    `data_dir = ${tomlString(join(options.dir, 'node'))}`,
    '',
    '[log]',
    'level = "warn"',
    '',
    '[http]',
    `host = "${LOOPBACK}"`,
    `port = ${options.port}`,
  ];
  if (options.extraToml) lines.push('', options.extraToml);
  for (const queue of options.queues) {
    lines.push('', `[queues.${queue.name}]`, `handler = ${tomlString(queue.handler)}`);
    if (queue.extra) lines.push(queue.extra);
  }
  return `${lines.join('\n')}\n`;
}

/** A TOML basic string: JSON's escaping is a subset of it. */
export function tomlString(text: string): string {
  return JSON.stringify(text);
}

/** What a node of a benchmark's group needs in its config: its own name, folder and port, the shared backends. */
export interface GroupNodeToml {
  readonly name: string;
  readonly dataDir: string;
  readonly port: number;
  readonly storeUrl: string;
  readonly poolSize: number;
  readonly redisUrl: string;
  readonly group: {
    readonly name: string;
    readonly elector: string;
    readonly leaseMs: number;
    readonly renewDeadlineMs: number;
    readonly heartbeatMs: number;
  };
}

/** The [node], [log], [http], [store], [redis] and [group] tables of a group node's config, as lines. */
export function groupNodeToml(node: GroupNodeToml): string[] {
  return [
    '[node]',
    `name = ${tomlString(node.name)}`,
    `data_dir = ${tomlString(node.dataDir)}`,
    'shutdown_timeout_ms = 3000',
    '',
    '[log]',
    'level = "info"',
    '',
    '[http]',
    `host = "${LOOPBACK}"`,
    `port = ${node.port}`,
    '',
    '[store]',
    `url = ${tomlString(node.storeUrl)}`,
    `pool_size = ${node.poolSize}`,
    '',
    '[redis]',
    `url = ${tomlString(node.redisUrl)}`,
    '',
    '[group]',
    `name = ${tomlString(node.group.name)}`,
    `elector = ${tomlString(node.group.elector)}`,
    `lease_ms = ${node.group.leaseMs}`,
    `renew_deadline_ms = ${node.group.renewDeadlineMs}`,
    `heartbeat_ms = ${node.group.heartbeatMs}`,
  ];
}

/** Polls `GET /readyz` until it answers 200; fails early if the child exits. */
export async function waitForReady(child: NodeChild, deadline: Deadline): Promise<void> {
  for (;;) {
    deadline.check();
    const { signal } = deadline;
    if (child.process.exitCode !== null || child.process.signalCode !== null) {
      throw new Error(
        `the node exited (${child.process.exitCode ?? child.process.signalCode}) before it was ready:\n${child.output()}`,
      );
    }
    const status = await request({ port: child.port, method: 'GET', path: '/readyz', signal })
      .then((response) => response.status)
      .catch((error: unknown) => {
        if (error instanceof DeadlineError) throw error;
        return 0;
      });
    if (status === 200) return;
    await pause(50, signal);
  }
}

/** Sends SIGTERM and waits for the exit; SIGKILL after `graceMs`. Resolves the exit code (or signal). */
export async function stopNodeChild(child: NodeChild, graceMs = 30_000): Promise<string> {
  const proc = child.process;
  if (proc.exitCode !== null || proc.signalCode !== null) return String(proc.exitCode ?? proc.signalCode);
  const exited = once(proc, 'exit');
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
  return String(proc.exitCode ?? proc.signalCode);
}

/** Reads `--name value` options; flags not listed in `known` are an error. */
export function parseOptions(args: readonly string[], known: readonly string[]): Map<string, string> {
  const options = new Map<string, string>();
  for (let index = 0; index < args.length; index += 2) {
    const flag = args[index] ?? '';
    const value = args[index + 1];
    if (!flag.startsWith('--') || !known.includes(flag.slice(2))) {
      throw new UsageError(`unknown option ${flag}; known: ${known.map((name) => `--${name}`).join(', ')}`);
    }
    if (value === undefined) throw new UsageError(`option ${flag} needs a value`);
    options.set(flag.slice(2), value);
  }
  return options;
}

/** A positive integer option, or `fallback` when absent. */
export function integerOption(options: Map<string, string>, name: string, fallback: number): number {
  const text = options.get(name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1)
    throw new UsageError(`--${name} expects a positive integer, got ${text}`);
  return value;
}

/** Bad command-line use: the runner prints it and exits 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/**
 * Runs one benchmark's measurement in a fresh temp folder under its overall deadline: prints the report and
 * the closing JSON line and returns 0; on a timeout prints the partial report and returns 1. The folder is
 * removed either way.
 */
export async function runMeasured<R>(options: {
  readonly timeoutS: number;
  readonly tmpPrefix: string;
  readonly report: R;
  measure(report: R, parent: string, deadline: Deadline): Promise<void>;
  print(report: R): void;
  printJson(report: R): void;
}): Promise<number> {
  const deadline = new Deadline(options.timeoutS * 1000);
  const parent = await mkdtemp(join(os.tmpdir(), options.tmpPrefix));
  try {
    await options.measure(options.report, parent, deadline);
    options.print(options.report);
    options.printJson(options.report);
    return 0;
  } catch (error) {
    if (!(error instanceof DeadlineError)) throw error;
    options.print(options.report);
    process.stdout.write(
      `TIMEOUT: not finished within ${options.timeoutS} s; the figures above are partial\n`,
    );
    return 1;
  } finally {
    deadline.dispose();
    await rm(parent, { recursive: true, force: true });
  }
}
