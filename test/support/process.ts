// Helpers for the CLI integration tests: run the built `baton` command, start a node and wait until it is
// ready, pick free ports, and make throw-away project folders. Nothing here depends on where the repository
// lives: paths are resolved from this file's URL.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { parse, stringify } from 'smol-toml';

/** Root of the repository (the folder of package.json), with a trailing separator. */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The built command line: `npm run build` must have run (`npm test` does it in `pretest`). */
export const BATON_BIN = fileURLToPath(new URL('../../bin/baton.js', import.meta.url));
/** Fixture handlers live under the repository so that they resolve its node_modules (drizzle-orm…). */
export const FIXTURES_DIR = fileURLToPath(new URL('../fixtures/', import.meta.url));

export interface RunOptions {
  cwd?: string;
  /** Added to the environment (which is the test's, minus any BATON_ variable); undefined removes a key. */
  env?: Record<string, string | undefined>;
  /** Written to the command's stdin, which is then closed. Without it stdin is closed at once. */
  input?: string | Buffer;
  /** The command is killed (SIGKILL) and the promise rejects after this many ms. Default 30 s. */
  timeoutMs?: number;
}

export interface RunResult {
  /** Exit code; null when the process was ended by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment of a child: the test's, without BATON_ overrides that could leak into configs. */
function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('BATON_') && value !== undefined) env[key] = value;
  }
  env['NO_COLOR'] = '1';
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

/** Spawns `command` in a process group of its own, with the test's environment (minus BATON_ variables). */
export function spawnCommand(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: Record<string, string | undefined> },
): ChildProcess {
  return spawn(command, args, {
    cwd: options.cwd ?? os.tmpdir(),
    env: childEnv(options.env),
    stdio: ['pipe', 'pipe', 'pipe'],
    // Its own process group, which cleanup ends whole: nothing the command started outlives the test.
    detached: true,
  });
}

/** SIGKILLs the process group a spawned command leads (whatever it started, too); nothing if it is gone. */
export function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // ESRCH: the group has no process left.
  }
}

/** Collects a child's output and resolves with it once the child has exited and its pipes are closed. */
function collect(child: ChildProcess): {
  output: () => { stdout: string; stderr: string };
  done: Promise<RunResult>;
} {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const done = new Promise<RunResult>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { output: () => ({ stdout, stderr }), done };
}

/** Runs `baton <args>` to completion. */
export function runBaton(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return runCommand(process.execPath, [BATON_BIN, ...args], options);
}

/** Runs `command <args>` to completion, in a process group of its own that a timeout kills whole. */
export async function runCommand(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const child = spawnCommand(command, args, options);
  const { output, done } = collect(child);
  // The command may exit before reading its input: a broken pipe then is not the test's concern.
  child.stdin?.on('error', () => undefined);
  child.stdin?.end(options.input ?? '');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      killGroup(child);
      const { stdout, stderr } = output();
      reject(
        new Error(
          `${path.basename(command)} ${args.join(' ')} did not finish within ${timeoutMs} ms\n--- stdout\n${stdout}\n--- stderr\n${stderr}`,
        ),
      );
    }, timeoutMs);
  });
  try {
    return await Promise.race([done, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** A port that was free a moment ago on 127.0.0.1 (the OS hands out ephemeral ports in turn). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface BatonNodeProcess {
  readonly process: ChildProcess;
  readonly pid: number;
  /** Base URL of the node's HTTP API, e.g. http://127.0.0.1:41234 */
  readonly url: string;
  /** Output so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** Sends `signal` (default SIGTERM) and resolves when the process has exited. */
  stop(signal?: NodeJS.Signals): Promise<RunResult>;
  /** Resolves when the process has exited (at once if it has). */
  waitExit(): Promise<RunResult>;
}

const startedNodes = new Set<BatonNodeProcess>();

export interface StartNodeOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** How long to wait for GET /readyz to answer 200. Default 40 s. */
  readyTimeoutMs?: number;
  /**
   * What to wait for: 'ready' (GET /readyz answers 200, the default) or 'listening' (GET /healthz answers
   * 200: the HTTP API is up, e.g. a node that waits for its store to take writes and is not ready).
   */
  until?: 'ready' | 'listening';
  /**
   * The command that starts the node, in place of `node bin/baton.js -c <configPath> run`: `npx baton …`, a
   * container's entrypoint. stop() signals the process this starts; the result is its exit, once every
   * process that shares its output (the node) has closed it.
   */
  command?: readonly string[];
  /**
   * A network namespace (`ip netns add`) to run the node in: its command is started through `ip netns exec`,
   * which execs it, so the process (and its group, which cleanup kills) is the node's. See netns.ts.
   */
  namespace?: string;
}

/**
 * Spawns `baton -c <configPath> run` and resolves once `GET <url>/readyz` (or /healthz, see `until`) answers
 * 200. The URL comes from the config's [http] host and port (give the port explicitly: port 0 would be unknown
 * to the test). Rejects, with the node's output, if the process exits first or is not ready in time.
 */
export async function startBatonNode(
  configPath: string,
  options: StartNodeOptions = {},
): Promise<BatonNodeProcess> {
  const url = await nodeUrl(configPath);
  const command = options.command ?? [process.execPath, BATON_BIN, '-c', configPath, 'run'];
  const argv =
    options.namespace === undefined ? command : ['ip', 'netns', 'exec', options.namespace, ...command];
  const child = spawnCommand(argv[0] ?? '', argv.slice(1), options);
  child.stdin?.end();
  const { output, done } = collect(child);
  const pid = child.pid;
  if (pid === undefined) {
    throw new Error(`could not spawn ${argv.join(' ')}: ${(await done).stderr}`);
  }
  let exited: RunResult | undefined;
  done.then(
    (result) => (exited = result),
    () => undefined, // a spawn error surfaces through stop() and waitExit()
  );
  const node: BatonNodeProcess = {
    process: child,
    pid,
    url,
    get stdout() {
      return output().stdout;
    },
    get stderr() {
      return output().stderr;
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      // child.kill signals this pid only, and is a no-op once the process has exited.
      if (exited === undefined && child.exitCode === null && child.signalCode === null) child.kill(signal);
      return done;
    },
    waitExit: () => done,
  };
  startedNodes.add(node);

  const deadline = Date.now() + (options.readyTimeoutMs ?? 40_000);
  for (;;) {
    if (exited !== undefined) {
      throw new Error(
        `baton run exited before it was ready (code ${String(exited.code)}, signal ${String(exited.signal)})\n` +
          `--- stderr\n${exited.stderr}`,
      );
    }
    if (await answers200(`${url}/${options.until === 'listening' ? 'healthz' : 'readyz'}`)) return node;
    if (Date.now() > deadline) {
      await node.stop('SIGKILL');
      const what = options.until === 'listening' ? 'listening' : 'ready';
      throw new Error(`baton run was not ${what} at ${url} in time\n--- stderr\n${output().stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function answers200(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await response.body?.cancel();
    return response.status === 200;
  } catch {
    return false;
  }
}

async function nodeUrl(configPath: string): Promise<string> {
  const config = parse(await readFile(configPath, 'utf8')) as { http?: { host?: unknown; port?: unknown } };
  const port = config.http?.port;
  if (typeof port !== 'number' || port === 0) {
    throw new Error(
      `${configPath}: set [http] port to a free port (see freePort()) so that the test can reach it`,
    );
  }
  const host = typeof config.http?.host === 'string' ? config.http.host : '127.0.0.1';
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * Kills every node started by this test file that still runs, with its process group (what it started, such
 * as task processes, goes too). For afterEach.
 */
export async function killStartedNodes(): Promise<void> {
  const nodes = [...startedNodes];
  startedNodes.clear();
  await Promise.all(
    nodes.map(async (node) => {
      killGroup(node.process);
      await node.stop('SIGKILL');
    }),
  );
}

export interface TempProject {
  readonly dir: string;
  /** Absolute path of the project's baton.toml. */
  readonly configPath: string;
  /** Absolute path of a file of the project. */
  path(relative: string): string;
  /** Writes a file of the project (folders are created). */
  write(relative: string, content: string): Promise<string>;
  cleanup(): Promise<void>;
}

export interface TempProjectOptions {
  /** Contents of baton.toml: TOML text, or a table that is written as TOML. */
  toml: string | Record<string, unknown>;
  /** More files, by path relative to the project folder. */
  files?: Record<string, string>;
  /**
   * Writes a package.json with "type": "module", so that TypeScript handlers written into the project are
   * loaded as ES modules, as they are under this repository. Default true.
   */
  esmPackage?: boolean;
}

const projects = new Set<TempProject>();

/** A fresh folder under the OS temp dir with a baton.toml and the given files. */
export async function tempProject(options: TempProjectOptions): Promise<TempProject> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'baton-cli-'));
  const write = async (relative: string, content: string): Promise<string> => {
    const file = path.join(dir, relative);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, content);
    return file;
  };
  const toml = typeof options.toml === 'string' ? options.toml : stringify(options.toml);
  const configPath = await write('baton.toml', toml);
  if (options.esmPackage ?? true) {
    await write(
      'package.json',
      `${JSON.stringify({ name: 'baton-test-project', private: true, type: 'module' })}\n`,
    );
  }
  for (const [relative, content] of Object.entries(options.files ?? {})) await write(relative, content);
  const project: TempProject = {
    dir,
    configPath,
    path: (relative) => path.join(dir, relative),
    write,
    cleanup: async () => {
      projects.delete(project);
      await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
    },
  };
  projects.add(project);
  return project;
}

/** Removes every temp project made by this test file that is still there. For afterEach. */
export async function removeTempProjects(): Promise<void> {
  await Promise.all([...projects].map((project) => project.cleanup()));
}

/** Kills the nodes, then removes the folders: the afterEach of the CLI tests. */
export async function cleanupAll(): Promise<void> {
  await killStartedNodes();
  await removeTempProjects();
}

/** Runs one statement through the node's HTTP API and returns its rows (big integers come back as strings). */
export async function sqlOverHttp(
  url: string,
  statement: string,
  token?: string,
): Promise<Array<Record<string, unknown>>> {
  const response = await fetch(`${url}/v1/sql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ sql: statement }),
    signal: AbortSignal.timeout(10_000),
  });
  const reply = (await response.json()) as { rows?: Array<Record<string, unknown>>; error?: string };
  if (!response.ok) throw new Error(`POST /v1/sql answered ${response.status}: ${reply.error ?? ''}`);
  return reply.rows ?? [];
}

/** Resolves or rejects as `promise` does, or rejects after `ms` with a message naming `what`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A role change a node logged: `time` in ms on the host clock. */
export interface RoleLine {
  time: number;
  role: string;
  term: number;
  cause: string;
}

/** The role changes a node logged (pino JSON lines `role …` on stderr), oldest first. */
export function roleLines(node: BatonNodeProcess): RoleLine[] {
  return node.stderr
    .split('\n')
    .filter((line) => line.includes('"role"') && line.includes('"cause"') && line.includes('"msg":"role '))
    .map((line) => JSON.parse(line) as RoleLine);
}
