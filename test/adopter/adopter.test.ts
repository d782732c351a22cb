// Baton as someone else's application gets it: the package as `npm pack` builds it, in a new application
// that follows the README's "In your own application" steps literally: `npm init -y`, `npm pkg set
// type=module`, the two installs (the package from its tarball, drizzle-orm at the oldest version of Baton's
// range), `npx baton init`, `npx tsc --noEmit`, `npx baton migrate` (on a fresh PostgreSQL database and on
// the embedded store), `npx baton run`, records over HTTP, and SIGTERM to the npx process, after which
// nothing it started may be left running. Slow (a pack and an install): one test.
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';

import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { RunOptions, RunResult } from '../support/process.js';
import { freePort, killGroup, REPO_ROOT, runCommand, spawnCommand, sqlOverHttp } from '../support/process.js';

const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanups.push(() => rm(dir, { recursive: true, force: true, maxRetries: 5 }));
  return dir;
}

interface Manifest {
  version: string;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

/** The drizzle-orm versions Baton supports: its peer dependency's range (its dependency's, before it had one). */
function drizzleRange(manifest: Manifest): string {
  const range =
    manifest.peerDependencies?.['drizzle-orm'] ??
    manifest.dependencies?.['drizzle-orm'] ??
    manifest.devDependencies?.['drizzle-orm'];
  if (range === undefined) throw new Error('package.json names no drizzle-orm range');
  return range;
}

/** Compares two plain `major.minor.patch` versions (npm leaves prereleases out of a range's matches). */
function compareVersions(a: string, b: string): number {
  const [x, y] = [a, b].map((version) => version.split(/[.+-]/).slice(0, 3).map(Number));
  for (let index = 0; index < 3; index++) {
    const difference = (x?.[index] ?? 0) - (y?.[index] ?? 0);
    if (difference !== 0) return difference;
  }
  return 0;
}

/** The lowest published version of `name` in `range` (npm resolves the range; we pick the lowest). */
async function lowestVersion(name: string, range: string, cwd: string): Promise<string> {
  const result = await npm(['view', `${name}@${range}`, 'version', '--json', '--prefer-offline'], { cwd });
  expect(result.code, result.stderr).toBe(0);
  const listed = JSON.parse(result.stdout) as string | string[];
  const versions = typeof listed === 'string' ? [listed] : listed;
  const lowest = [...versions].sort(compareVersions)[0];
  if (lowest === undefined) throw new Error(`no version of ${name} in ${range}`);
  return lowest;
}

function npm(args: readonly string[], options: RunOptions): Promise<RunResult> {
  return runCommand('npm', args, { timeoutMs: 300_000, ...options });
}

/** A command of the README, run as it says: `npx baton …` in the application's folder. */
function npx(args: readonly string[], options: RunOptions): Promise<RunResult> {
  return runCommand('npx', args, { timeoutMs: 120_000, ...options });
}

function ok(result: RunResult): void {
  expect(result.code, `--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`).toBe(0);
}

async function waitFor<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Whether any process of the group `pgid` is alive (a zombie not yet reaped counts). */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw error;
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function tableExists(url: string, table: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const result = await client.query<{ name: string | null }>('SELECT to_regclass($1)::text AS name', [
      table,
    ]);
    return result.rows[0]?.name != null;
  } finally {
    await client.end();
  }
}

describe('an application that adopts Baton', () => {
  it(
    'installs the packed package, follows the README, and leaves nothing running after SIGTERM',
    { timeout: 900_000 },
    async () => {
      const manifest = JSON.parse(await readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as Manifest;

      // The package as it would be published: `npm pack` builds it.
      const packDir = await tempDir('baton-pack-');
      ok(await npm(['pack', '--pack-destination', packDir], { cwd: REPO_ROOT, timeoutMs: 600_000 }));
      const tarball = (await readdir(packDir)).find((file) => file.endsWith('.tgz'));
      expect(tarball).toBe(`baton-runtime-${manifest.version}.tgz`);

      // A new application, with the oldest drizzle-orm Baton supports, and Baton's own TypeScript.
      const app = await tempDir('baton-adopter-');
      const drizzle = await lowestVersion('drizzle-orm', drizzleRange(manifest), app);
      const typescript = manifest.devDependencies?.['typescript'] ?? 'latest';
      const typesNode = manifest.devDependencies?.['@types/node'] ?? 'latest';
      const offline = ['--prefer-offline', '--no-audit', '--no-fund'];
      ok(await npm(['init', '-y'], { cwd: app }));
      ok(await npm(['pkg', 'set', 'type=module'], { cwd: app }));
      ok(
        await npm(['install', path.join(packDir, tarball ?? ''), `drizzle-orm@${drizzle}`, ...offline], {
          cwd: app,
          timeoutMs: 600_000,
        }),
      );
      ok(
        await npm(['install', '-D', `typescript@${typescript}`, `@types/node@${typesNode}`, ...offline], {
          cwd: app,
          timeoutMs: 600_000,
        }),
      );
      // `npx baton` must find the installed command, not fetch the unrelated npm package named baton.
      expect(existsSync(path.join(app, 'node_modules/.bin/baton'))).toBe(true);
      const installed = JSON.parse(
        await readFile(path.join(app, 'node_modules/drizzle-orm/package.json'), 'utf8'),
      ) as Manifest;
      expect(installed.version).toBe(drizzle);
      // One drizzle-orm for the application and Baton: two would make their types (and `is()`) disagree.
      expect(existsSync(path.join(app, 'node_modules/baton-runtime/node_modules/drizzle-orm'))).toBe(false);

      const init = await npx(['baton', 'init'], { cwd: app });
      ok(init);
      expect(init.stdout).toContain('created  handlers/messages.ts');
      ok(await npx(['tsc', '--noEmit'], { cwd: app }));

      // `migrate` on a fresh PostgreSQL database, the store named by the environment.
      const database: TestDatabase = await createTestDatabase();
      cleanups.push(() => database.drop());
      const onServer = await npx(['baton', 'migrate'], { cwd: app, env: { BATON_STORE__URL: database.url } });
      ok(onServer);
      expect(onServer.stdout).toContain('applied messages/0001_init');
      expect(await tableExists(database.url, 'messages')).toBe(true);
      // … and on the embedded store in .baton/, which `run` then uses.
      const embedded = await npx(['baton', 'migrate'], { cwd: app });
      ok(embedded);
      expect(embedded.stdout).toContain('applied messages/0001_init');

      const port = await freePort();
      const url = `http://127.0.0.1:${port}`;
      const node = spawnCommand('npx', ['baton', 'run'], {
        cwd: app,
        env: { BATON_HTTP__PORT: String(port) },
      });
      node.stdin?.end();
      let output = '';
      node.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
      node.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
      const pgid = node.pid;
      if (pgid === undefined) throw new Error('npx baton run did not start');
      cleanups.push(() => Promise.resolve(killGroup(node)));

      await waitFor(`GET ${url}/readyz\n${output}`, 120_000, async () => {
        const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) }).catch(
          () => undefined,
        );
        await response?.body?.cancel();
        return response?.status === 200 ? true : undefined;
      });
      const posted = await fetch(`${url}/v1/queues/messages/records`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson' },
        body: '{"type":"signup","user":1}\n{"type":"login","user":1}\n{"type":"signup","user":2}\n',
      });
      expect(posted.status).toBe(202);
      expect(await posted.json()).toEqual({ accepted: 3 });
      await waitFor('3 rows in messages', 60_000, async () => {
        const rows = await sqlOverHttp(url, 'SELECT count(*)::int AS n FROM messages');
        return rows[0]?.['n'] === 3 ? true : undefined;
      });
      // The README's way to look, through the running node.
      const counted = await npx(['baton', 'sql', "select count(*) from messages where type = 'signup'"], {
        cwd: app,
      });
      ok(counted);
      expect(counted.stdout.trim()).toBe('2');

      // SIGTERM to the process the user started: the node drains and exits, and nothing stays behind.
      process.kill(pgid, 'SIGTERM');
      await waitFor(`npx baton run to exit after SIGTERM\n${output}`, 60_000, () =>
        Promise.resolve(node.exitCode !== null || node.signalCode !== null ? true : undefined),
      );
      await waitFor(
        `every process of the group to end after SIGTERM (a node left behind?)\n${output}`,
        60_000,
        () => Promise.resolve(groupAlive(pgid) ? undefined : true),
      );
      expect(await portFree(port)).toBe(true);
      // Drained, not killed: the node logged its stop.
      expect(output).toMatch(/"msg":"node \S+ stopped"/);
    },
  );
});
