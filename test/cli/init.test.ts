// `baton init`: the project it writes loads, type-checks strictly, migrates, and its migration matches the
// handler's schema; beside an existing application it adds to package.json and .gitignore without losing
// anything, and it refuses to replace its own files without --force.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { DEFAULT_QUEUE } from '../../src/cli/commands/init.js';
import { identifier, SCRIPTS, tableName } from '../../src/cli/scaffold.js';
import { loadConfig } from '../../src/config/load.js';
import type { RunResult } from '../support/process.js';
import { linkRepoPackages, tscArgs } from '../support/linked-app.js';
import { runBaton, runCommand } from '../support/process.js';

const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true, maxRetries: 5 })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'baton-init-'));
  dirs.push(dir);
  return dir;
}

async function read(dir: string, file: string): Promise<string> {
  return readFile(path.join(dir, file), 'utf8');
}

/** `baton init <args>` run from `cwd`; its output must not be an error unless `code` says so. */
async function init(cwd: string, args: readonly string[] = []): Promise<RunResult> {
  return runBaton(['init', ...args], { cwd });
}

/** What the next steps tell to install besides baton-runtime. */
const DEPENDENCIES = ['drizzle-orm', 'typescript', '@types/node'];

async function typecheck(dir: string): Promise<RunResult> {
  return runCommand(process.execPath, tscArgs(dir), { cwd: dir, timeoutMs: 120_000 });
}

describe('baton init', () => {
  it(
    'writes a project into an empty folder that loads, type-checks, migrates and matches its migration',
    { timeout: 240_000 },
    async () => {
      const root = await tempDir();
      const result = await init(root, ['app']);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      const dir = path.join(root, 'app');
      for (const file of [
        'baton.toml',
        `handlers/${DEFAULT_QUEUE}.ts`,
        `handlers/migrations/${DEFAULT_QUEUE}/0001_init.sql`,
        'tsconfig.json',
        'package.json',
        '.gitignore',
      ]) {
        expect(result.stdout).toMatch(new RegExp(`^created +${file.replace(/\./g, '\\.')}$`, 'm'));
        expect(existsSync(path.join(dir, file))).toBe(true);
      }
      // The next steps: from the folder it was run in, what to install, then migrate and run.
      expect(result.stdout).toContain('cd app\n');
      expect(result.stdout).toContain('npm install baton-runtime drizzle-orm\n');
      expect(result.stdout).toContain('npm install -D typescript @types/node\n');
      expect(result.stdout).toContain('npx baton migrate');
      expect(result.stdout).toContain('npx baton run');

      const config = await loadConfig({ cwd: dir, env: {} });
      expect(Object.keys(config.queues)).toEqual([DEFAULT_QUEUE]);
      expect(config.queues[DEFAULT_QUEUE]?.handler).toBe(path.join(dir, `handlers/${DEFAULT_QUEUE}.ts`));
      expect(config.queues[DEFAULT_QUEUE]?.migrations).toBe(
        path.join(dir, `handlers/migrations/${DEFAULT_QUEUE}`),
      );
      expect(config.store.kind).toBe('embedded');
      expect(config.node.dataDir).toBe(path.join(dir, '.baton'));

      const manifest = JSON.parse(await read(dir, 'package.json')) as Record<string, unknown>;
      expect(manifest).toMatchObject({ name: 'app', private: true, type: 'module', scripts: SCRIPTS });
      expect((await read(dir, '.gitignore')).split('\n')).toContain('.baton/');
      const tsconfig = JSON.parse(await read(dir, 'tsconfig.json')) as {
        compilerOptions: Record<string, unknown>;
      };
      expect(tsconfig.compilerOptions).toMatchObject({
        strict: true,
        noUncheckedIndexedAccess: true,
        exactOptionalPropertyTypes: true,
        module: 'NodeNext',
      });

      await linkRepoPackages(dir, DEPENDENCIES);
      const checked = await typecheck(dir);
      expect(checked.stdout + checked.stderr).toBe('');
      expect(checked.code).toBe(0);

      const migrated = await runBaton(['migrate'], { cwd: dir, timeoutMs: 60_000 });
      expect(migrated.code).toBe(0);
      expect(migrated.stdout).toContain(`applied ${DEFAULT_QUEUE}/0001_init`);
      // The migration creates the table exactly as the handler declares it: nothing left to migrate.
      const made = await runBaton(['make-migration', DEFAULT_QUEUE], { cwd: dir, timeoutMs: 60_000 });
      expect(made.stderr).toBe('');
      expect(made.stdout).toContain("already give its handler's schema");
    },
  );

  it(
    'writes an ES-module handler (.mts) into a CommonJS package, which type-checks too',
    { timeout: 180_000 },
    async () => {
      const dir = await tempDir();
      await writeFile(path.join(dir, 'package.json'), '{\n  "name": "legacy",\n  "version": "1.0.0"\n}\n');
      const result = await init(dir, ['--queue', 'page-views']);
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/^created +handlers\/page-views\.mts \(.*"type": "module"\)$/m);
      expect(JSON.parse(await read(dir, 'package.json'))).not.toHaveProperty('type');
      expect(await read(dir, 'handlers/page-views.mts')).toContain(
        "export const pageViews = pgTable('page_views', {",
      );
      const config = await loadConfig({ cwd: dir, env: {} });
      expect(config.queues['page-views']?.handler).toBe(path.join(dir, 'handlers/page-views.mts'));
      await linkRepoPackages(dir, DEPENDENCIES);
      const checked = await typecheck(dir);
      expect(checked.stdout + checked.stderr).toBe('');
      expect(checked.code).toBe(0);
    },
  );

  it("adds to an existing application's package.json and .gitignore, keeping everything it had", async () => {
    const dir = await tempDir();
    const manifest = {
      name: 'shop',
      version: '2.3.4',
      type: 'module',
      description: 'an application of its own',
      scripts: { start: 'node server.js', test: 'vitest run', migrate: 'baton migrate' },
      dependencies: { 'baton-runtime': '^0.1.0', 'drizzle-orm': '^0.45.0', fastify: '^5.0.0' },
      devDependencies: { typescript: '^5.9.0' },
      workspaces: ['packages/*'],
    };
    const text = JSON.stringify(manifest, null, 4);
    await writeFile(path.join(dir, 'package.json'), text); // four spaces, no final newline
    await writeFile(path.join(dir, '.gitignore'), 'node_modules\ndist'); // no final newline
    const tsconfig = '{ "compilerOptions": { "strict": false } }\n';
    await writeFile(path.join(dir, 'tsconfig.json'), tsconfig);

    const result = await init(dir);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^kept +tsconfig\.json \(exists\)$/m);
    expect(result.stdout).toMatch(
      /^updated +package\.json \(scripts baton, typecheck; kept your "start"\)$/m,
    );
    expect(result.stdout).toMatch(/^updated +\.gitignore \(\.baton\/\)$/m);
    // Only what is missing is left to install.
    expect(result.stdout).not.toContain('npm install baton-runtime');
    expect(result.stdout).toContain('npm install -D @types/node\n');

    expect(await read(dir, 'tsconfig.json')).toBe(tsconfig);
    expect(await read(dir, '.gitignore')).toBe('node_modules\ndist\n.baton/\n');
    const merged = await read(dir, 'package.json');
    expect(JSON.parse(merged)).toEqual({
      ...manifest,
      scripts: { ...manifest.scripts, baton: 'baton', typecheck: 'tsc --noEmit' },
    });
    expect(merged).toMatch(/^ {4}"name"/m);
    expect(merged.endsWith('}')).toBe(true);

    // A second run changes nothing it does not own, and refuses to replace what it does.
    const again = await init(dir);
    expect(again.code).toBe(1);
    expect(again.stdout).toBe('');
    expect(again.stderr).toContain(
      'baton.toml, handlers/messages.ts, handlers/migrations/messages/0001_init.sql',
    );
    expect(again.stderr).toContain('Nothing was written');
    expect(await read(dir, 'package.json')).toBe(merged);
  });

  it('never replaces an existing baton.toml without --force, and with it replaces only its own files', async () => {
    const dir = await tempDir();
    const mine = '[queues.orders]\nhandler = "./orders.ts"\n';
    await writeFile(path.join(dir, 'baton.toml'), mine);
    const refused = await init(dir);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^baton: not initialising .*: baton\.toml exists\.$/m);
    expect(await read(dir, 'baton.toml')).toBe(mine);
    expect(existsSync(path.join(dir, 'handlers'))).toBe(false);
    expect(existsSync(path.join(dir, 'package.json'))).toBe(false);

    // A migrations folder that already holds migrations is the queue's: a first one beside them is refused.
    const other = await tempDir();
    await mkdir(path.join(other, 'handlers/migrations/messages'), { recursive: true });
    await writeFile(path.join(other, 'handlers/migrations/messages/0001_mine.sql'), 'SELECT 1;\n');
    const beside = await init(other);
    expect(beside.code).toBe(1);
    expect(beside.stderr).toContain('handlers/migrations/messages/0001_mine.sql exists');

    const forced = await init(dir, ['--force']);
    expect(forced.code).toBe(0);
    expect(forced.stdout).toMatch(/^replaced +baton\.toml$/m);
    expect(forced.stdout).toMatch(/^created +handlers\/messages\.ts$/m);
    expect(await read(dir, 'baton.toml')).toContain('[queues.messages]');
  });

  it('takes the queue and the store from flags, and refuses what the config would refuse', async () => {
    const dir = await tempDir();
    const url = 'postgres://app:secret@db.internal:5432/app';
    const result = await init(dir, ['--queue', 'billing.v2', '--store', url]);
    expect(result.code).toBe(0);
    const config = await loadConfig({ cwd: dir, env: {} });
    expect(Object.keys(config.queues)).toEqual(['billing.v2']);
    expect(config.store).toMatchObject({ kind: 'postgres', url });
    expect(await read(dir, 'handlers/billing.v2.ts')).toContain(
      "export const billingV2 = pgTable('billing_v2', {",
    );
    expect(await read(dir, 'handlers/migrations/billing.v2/0001_init.sql')).toContain(
      'CREATE TABLE IF NOT EXISTS "billing_v2" (',
    );

    const badQueue = await init(await tempDir(), ['--queue', '../escape']);
    expect(badQueue.code).toBe(2);
    expect(badQueue.stderr).toContain('invalid queue name "../escape"');
    const badStore = await init(await tempDir(), ['--store', 'mysql://db/app']);
    expect(badStore.code).toBe(2);
    expect(badStore.stderr).toContain('store.url');
    expect(badStore.stderr).toContain('postgres://');
  });

  it('names tables and their TypeScript constants safely', () => {
    expect(tableName('Page-Views')).toBe('page_views');
    expect(tableName('2024.logs')).toBe('t_2024_logs');
    expect(identifier('page_views')).toBe('pageViews');
    expect(identifier('t_2024_logs')).toBe('t2024Logs');
    expect(identifier('default')).toBe('defaultTable');
    expect(identifier('schema')).toBe('schemaTable');
    expect(identifier('messages')).toBe('messages');
  });
});
