// Private PostgreSQL and Redis servers for fault tests, which restart and kill them: never the machine's
// shared ones. PostgreSQL runs from a temp folder (initdb + pg_ctl, as the `postgres` user when the tests
// run as root); Redis runs with appendonly + appendfsync always, as exactly-once across its crash needs.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chown, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { freePort } from './process.js';

export interface PrivatePostgres {
  readonly url: string;
  readonly port: number;
  restart(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  dispose(): Promise<void>;
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = await postgresBin();
  const dir = await mkdtemp(join(tmpdir(), 'baton-pg-'));
  const data = join(dir, 'data');
  if (process.getuid?.() === 0) await chown(dir, ...(await postgresIds()));
  await run([join(bin, 'initdb'), '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  const options = `-p ${port} -c listen_addresses=127.0.0.1 -k ${dir} -c max_connections=200`;
  const pgCtl = async (...args: string[]): Promise<void> => {
    await run([join(bin, 'pg_ctl'), '-D', data, '-l', join(dir, 'log'), ...args]);
  };
  await pgCtl('-o', options, '-w', 'start');
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    restart: () => pgCtl('-o', options, '-m', 'fast', '-w', 'restart'),
    stop: () => pgCtl('-m', 'immediate', '-w', 'stop'),
    start: () => pgCtl('-o', options, '-w', 'start'),
    async dispose() {
      await pgCtl('-m', 'immediate', '-w', 'stop').catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface PrivateRedis {
  readonly url: string;
  readonly port: number;
  /** Stops Redis (SIGTERM: it writes its AOF) and starts it again on the same port and data. */
  restart(): Promise<void>;
  dispose(): Promise<void>;
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'baton-redis-'));
  const port = await freePort();
  let server: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    server = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--save',
        '',
      ],
      { stdio: 'ignore' },
    );
    await waitFor(
      async () =>
        await run(['redis-cli', '-p', String(port), 'ping']).then(
          () => true,
          () => false,
        ),
      'Redis',
    );
  };
  const stop = async (): Promise<void> => {
    const current = server;
    if (!current || current.exitCode !== null) return;
    const exited = new Promise((resolve) => current.once('exit', resolve));
    current.kill('SIGTERM');
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async restart() {
      await stop();
      await start();
    },
    async dispose() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function postgresBin(): Promise<string> {
  const versions = (await readdir('/usr/lib/postgresql')).sort((a, b) => Number(b) - Number(a));
  if (versions.length === 0) throw new Error('no PostgreSQL server binaries under /usr/lib/postgresql');
  return join('/usr/lib/postgresql', versions[0] as string, 'bin');
}

async function postgresIds(): Promise<[number, number]> {
  const out = await run(['id', '-u', 'postgres']);
  const group = await run(['id', '-g', 'postgres']);
  return [Number(out.trim()), Number(group.trim())];
}

/** Runs a command (as `postgres` when root and it is a PostgreSQL binary) and resolves with its stdout. */
function run(argv: readonly string[]): Promise<string> {
  const asPostgres = process.getuid?.() === 0 && argv[0]?.startsWith('/usr/lib/postgresql') === true;
  const [command, ...args] = asPostgres ? ['runuser', '-u', 'postgres', '--', ...argv] : argv;
  return new Promise((resolve, reject) => {
    const child = spawn(command as string, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve(stdout)
        : reject(new Error(`${argv.join(' ')} exited ${code}: ${stderr || stdout}`)),
    );
  });
}

async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let tries = 0; tries < 100; tries++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what} did not start`);
}
