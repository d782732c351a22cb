// Private PostgreSQL and Redis servers for fault tests, which restart and kill them: never the machine's
// shared ones. PostgreSQL runs from a temp folder (initdb + pg_ctl, as the `postgres` user when the tests
// run as root); Redis runs with appendonly + appendfsync always, as exactly-once across its crash needs.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { appendFile, chown, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import pg from 'pg';

import { freePort } from './process.js';

export interface PrivatePostgres {
  readonly url: string;
  readonly port: number;
  /** The address clients connect to (the first of `listen`). */
  readonly host: string;
  /** The data directory (owned by `postgres` when the tests run as root). */
  readonly data: string;
  restart(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** `pg_ctl promote -w`: a standby leaves recovery and becomes a primary. */
  promote(): Promise<void>;
  /** True while the server is in recovery (a standby). */
  inRecovery(): Promise<boolean>;
  dispose(): Promise<void>;
}

export interface PrivatePostgresOptions {
  /** The addresses the server listens on; the first is the one `url` names. Default ['127.0.0.1']. */
  listen?: readonly string[];
  /** More `-c name=value` settings, e.g. { wal_level: 'replica', track_commit_timestamp: 'on' }. */
  settings?: Readonly<Record<string, string>>;
}

/** A PostgreSQL server of the test's own, in a temp folder: initdb, then pg_ctl start. */
export async function startPrivatePostgres(options: PrivatePostgresOptions = {}): Promise<PrivatePostgres> {
  const bin = await postgresBin();
  const dir = await mkdtemp(join(tmpdir(), 'baton-pg-'));
  const data = join(dir, 'data');
  if (process.getuid?.() === 0) await chown(dir, ...(await postgresIds()));
  await run([join(bin, 'initdb'), '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  // Streaming replication from any address the server listens on (trust: test servers only).
  await appendFile(
    join(data, 'pg_hba.conf'),
    'host replication all 0.0.0.0/0 trust\nhost all all 0.0.0.0/0 trust\n',
  );
  return launch(bin, dir, data, options);
}

/**
 * A hot standby of `primary`, made with `pg_basebackup -R` (so it streams from the primary and stays in
 * recovery until promoted).
 */
export async function startPrivateStandby(
  primary: PrivatePostgres,
  options: PrivatePostgresOptions = {},
): Promise<PrivatePostgres> {
  const bin = await postgresBin();
  const dir = await mkdtemp(join(tmpdir(), 'baton-pg-standby-'));
  const data = join(dir, 'data');
  if (process.getuid?.() === 0) await chown(dir, ...(await postgresIds()));
  await run([
    join(bin, 'pg_basebackup'),
    '-h',
    primary.host,
    '-p',
    String(primary.port),
    '-U',
    'postgres',
    '-D',
    data,
    '-R',
    '-X',
    'stream',
    '--no-sync',
  ]);
  return launch(bin, dir, data, { ...options, settings: { hot_standby: 'on', ...options.settings } });
}

async function launch(
  bin: string,
  dir: string,
  data: string,
  options: PrivatePostgresOptions,
): Promise<PrivatePostgres> {
  const listen = options.listen ?? ['127.0.0.1'];
  const host = listen[0] ?? '127.0.0.1';
  const port = await freePort();
  const settings = Object.entries({ max_connections: '200', wal_level: 'replica', ...options.settings })
    .map(([name, value]) => `-c ${name}=${value}`)
    .join(' ');
  const serverOptions = `-p ${port} -c listen_addresses=${listen.join(',')} -k ${dir} ${settings}`;
  const pgCtl = async (...args: string[]): Promise<void> => {
    await run([join(bin, 'pg_ctl'), '-D', data, '-l', join(dir, 'log'), ...args]);
  };
  await pgCtl('-o', serverOptions, '-w', 'start');
  const url = `postgres://postgres@${host}:${port}/postgres`;
  return {
    url,
    port,
    host,
    data,
    restart: () => pgCtl('-o', serverOptions, '-m', 'fast', '-w', 'restart'),
    stop: () => pgCtl('-m', 'immediate', '-w', 'stop'),
    start: () => pgCtl('-o', serverOptions, '-w', 'start'),
    promote: () => pgCtl('-w', 'promote'),
    async inRecovery() {
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
      await client.connect();
      try {
        const result = await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
        return result.rows[0]?.r === true;
      } finally {
        await client.end();
      }
    },
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
