// `make-migration` writes a migration from the difference between a handler's schema and what the queue's
// migrations give (the first one, the baseline, creates the tables, also where `run` created them before);
// `migrate` applies each once and in order, even when two processes migrate at the same time, refuses a file
// out of order or changed after it was applied, and says PostgreSQL's reason when a statement fails. On
// PGlite and PostgreSQL.
import { readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { afterEach, describe, expect, it, vi } from 'vitest';

import { dropTrackedDatabases, storeToml } from '../support/postgres.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

afterEach(async () => {
  await cleanupAll();
  await dropTrackedDatabases();
});

/** Each command opens the store and loads drizzle-kit (make-migration a scratch database too): slow on a busy machine. */
const SLOW = 120_000;

async function project(store: 'embedded' | 'postgres') {
  const toml =
    `[node]\ndata_dir = "data"\n[http]\nenabled = false\n${await storeToml(store)}` +
    `[queues.items]\nhandler = "${join(FIXTURES_DIR, 'items-handler.ts')}"\nmigrations = "./migrations/items"\n`;
  const created = await tempProject({ toml });
  const baton = (args: string[], version = '1') =>
    runBaton(['-c', created.configPath, ...args], {
      env: { ITEMS_SCHEMA_VERSION: version },
      timeoutMs: SLOW,
    });
  return { ...created, baton };
}

describe.each(['embedded', 'postgres'] as const)('migrations on the %s store', (store) => {
  it('generates, applies and records migrations from schema changes', async () => {
    const p = await project(store);

    const first = await p.baton(['make-migration', 'items', '-m', 'create items']);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/wrote .*0001_create_items\.sql/);
    const files = await readdir(p.path('migrations/items'));
    expect(files).toEqual(['0001_create_items.sql']);
    expect(await readFile(p.path('migrations/items/0001_create_items.sql'), 'utf8')).toMatch(
      /CREATE TABLE IF NOT EXISTS "items"/,
    );

    const applied = await p.baton(['migrate']);
    expect(applied.code).toBe(0);
    expect(applied.stdout).toContain('applied items/0001_create_items');
    // Not a terminal: progress comes as plain lines on stderr.
    expect(applied.stderr).toMatch(/^migrating: 1\/1$/m);

    const unchanged = await p.baton(['make-migration', 'items', '-m', 'nothing']);
    expect(unchanged.stdout).toContain('already give its handler');

    const second = await p.baton(['make-migration', 'items', '-m', 'add price'], '2');
    expect(second.code).toBe(0);
    expect(await readFile(p.path('migrations/items/0002_add_price.sql'), 'utf8')).toMatch(
      /ALTER TABLE "items" ADD COLUMN "price" integer/,
    );
    // The diff is with what the migrations give, whether or not the database has them applied yet.
    const again = await p.baton(['make-migration', 'items', '-m', 'again'], '2');
    expect(again).toMatchObject({ code: 0, stderr: '' });
    expect(again.stdout).toContain('already give its handler');

    expect((await p.baton(['migrate'], '2')).stdout).toContain('applied items/0002_add_price');
    expect((await p.baton(['migrate'], '2')).stdout).toContain('the schema is up to date');
    const columns = await p.baton([
      'sql',
      "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'items'",
    ]);
    expect(columns.stdout.trim()).toBe('id,name,price');
  }, 600_000);
});

describe('migrations on PostgreSQL', () => {
  it('applies each migration once when two processes migrate at the same time', async () => {
    const p = await project('postgres');
    expect((await p.baton(['make-migration', 'items', '-m', 'create items'])).code).toBe(0);
    const [a, b] = await Promise.all([p.baton(['migrate']), p.baton(['migrate'])]);
    expect([a.code, b.code]).toEqual([0, 0]);
    const ledger = await p.baton([
      'sql',
      "SELECT count(*) FROM baton_migrations WHERE id = 'items/0001_create_items'",
    ]);
    expect(ledger).toMatchObject({ code: 0, stderr: '' });
    expect(ledger.stdout.trim()).toBe('1');
    expect(`${a.stdout}${b.stdout}`.match(/applied items\/0001_create_items/g)).toHaveLength(1);
  }, 300_000);
});

describe('make-migration while a node owns the embedded store', () => {
  it('diffs the handler as the command loads it now, not as the node loaded it at its start', async () => {
    const port = await freePort();
    const toml =
      `[node]\ndata_dir = "data"\n[log]\nlevel = "warn"\n[http]\nport = ${port}\n` +
      `[queues.items]\nhandler = "${join(FIXTURES_DIR, 'items-handler.ts')}"\nmigrations = "./migrations/items"\n`;
    const p = await tempProject({ toml });
    const baton = (args: string[], version: string) =>
      runBaton(['-c', p.configPath, ...args], { env: { ITEMS_SCHEMA_VERSION: version }, timeoutMs: SLOW });
    expect((await baton(['make-migration', 'items', '-m', 'create items'], '1')).code).toBe(0);
    // The node applies 0001 at its start, with the schema of version 1.
    const node = await startBatonNode(p.configPath, { env: { ITEMS_SCHEMA_VERSION: '1' } });
    // The handler changed since (version 2 adds a column): the command goes through the node and sees it.
    const second = await baton(['make-migration', 'items', '-m', 'add price'], '2');
    expect(second.stderr).toBe('');
    expect(second.code).toBe(0);
    expect(await readFile(p.path('migrations/items/0002_add_price.sql'), 'utf8')).toMatch(
      /ALTER TABLE "items" ADD COLUMN "price" integer/,
    );
    expect((await node.stop()).code).toBe(0);
  }, 300_000);
});

const ITEMS_TABLE =
  "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'items'";

describe.each(['embedded', 'postgres'] as const)('the baseline on the %s store', (store) => {
  it('creates the tables that `run` created before, and a fresh database gets them too, where a node runs', async () => {
    const p = await project(store);
    // No migrations yet: migrate, as run, creates the handler's tables from its schema.
    expect((await p.baton(['migrate'])).stdout).toContain('created table public.items');
    expect((await p.baton(['sql', "INSERT INTO items (name) VALUES ('kept')"])).code).toBe(0);

    // The schema changed since (version 2 adds price): the first migration creates the whole table, and
    // brings the table that exists to it.
    const made = await p.baton(['make-migration', 'items', '-m', 'init'], '2');
    expect(made).toMatchObject({ code: 0, stderr: '' });
    expect(made.stdout).toContain('0001_init.sql (the baseline');
    const text = await readFile(p.path('migrations/items/0001_init.sql'), 'utf8');
    expect(text).toMatch(/CREATE TABLE IF NOT EXISTS "items" \([^;]*"price" integer/);
    expect(text).toMatch(/ALTER TABLE "items" ADD COLUMN IF NOT EXISTS "price" integer;/);

    // It applies to the database where the table exists, which keeps its rows and gets the column.
    const dev = await p.baton(['migrate'], '2');
    expect(dev.code).toBe(0);
    expect(dev.stdout).toContain('applied items/0001_init');
    expect(dev.stderr).not.toContain('warning');
    expect((await p.baton(['sql', ITEMS_TABLE])).stdout.trim()).toBe('id,name,price');
    expect((await p.baton(['sql', 'SELECT name FROM items'])).stdout.trim()).toBe('kept');

    // A fresh database with the same migrations: migrate creates the table, and a node runs the handler.
    const port = await freePort();
    const fresh = await p.write(
      'fresh.toml',
      `[node]\ndata_dir = "fresh"\n[log]\nlevel = "warn"\n[http]\nport = ${port}\n${await storeToml(store)}` +
        `[queues.items]\nhandler = "${join(FIXTURES_DIR, 'items-handler.ts')}"\nmigrations = "./migrations/items"\n`,
    );
    const freshBaton = (args: string[], input?: string) =>
      runBaton(['-c', fresh, ...args], {
        env: { ITEMS_SCHEMA_VERSION: '2' },
        timeoutMs: SLOW,
        ...(input ? { input } : {}),
      });
    const migrated = await freshBaton(['migrate']);
    expect(migrated.code).toBe(0);
    expect(migrated.stdout).toContain('applied items/0001_init');
    const node = await startBatonNode(fresh, { env: { ITEMS_SCHEMA_VERSION: '2' } });
    expect((await freshBaton(['publish', 'items', '-'], 'first\n')).code).toBe(0);
    await vi.waitFor(
      async () => expect((await freshBaton(['sql', 'SELECT name FROM items'])).stdout.trim()).toBe('first'),
      { timeout: 30_000, interval: 300 },
    );
    expect((await freshBaton(['sql', ITEMS_TABLE])).stdout.trim()).toBe('id,name,price');
    // The queue's tables came from its migrations: nothing to warn about.
    expect(node.stderr).not.toContain('lacks');
    expect((await node.stop()).code).toBe(0);
  }, 600_000);

  it("names a failed migration with PostgreSQL's reason and SQLSTATE, in migrate and in run", async () => {
    const p = await project(store);
    await p.write(
      'migrations/items/0001_broken.sql',
      '-- a type that does not exist\nCREATE TABLE t (x nosuchtype);\n',
    );
    for (const command of ['migrate', 'run']) {
      const failed = await p.baton([command]);
      expect(failed.code).toBe(1);
      expect(failed.stderr).toContain(
        'migration items/0001_broken: type "nosuchtype" does not exist (SQLSTATE 42704)',
      );
      expect(failed.stderr).toContain('Failed query: CREATE TABLE t (x nosuchtype)\n');
      expect(failed.stderr).not.toContain('params');
    }
  }, 400_000);
});

describe('the order and the text of applied migrations', () => {
  it('refuses a file that sorts before an applied one, and an applied one that changed; warns of a missing one', async () => {
    const p = await project('postgres');
    const dir = 'migrations/items';
    await p.write(`${dir}/0001_notes.sql`, 'CREATE TABLE notes (x int);\n');
    // The queue has migrations, which do not create its handler's table: run does not create it, but says so.
    const partial = await p.baton(['migrate']);
    expect(partial.code).toBe(0);
    expect(partial.stdout).not.toContain('created table');
    expect(partial.stderr).toContain('the database lacks public.items');
    expect(partial.stderr).toContain('baton make-migration items');

    await p.write(
      `${dir}/0002_items.sql`,
      'CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\n',
    );
    const complete = await p.baton(['migrate']);
    expect(complete.stdout).toContain('applied items/0002_items');
    expect(complete.stderr).not.toContain('warning');

    await p.write(`${dir}/0000_early.sql`, 'CREATE TABLE early (x int);\n');
    const early = await p.baton(['migrate']);
    expect(early.code).toBe(1);
    expect(early.stderr).toContain('items/0000_early sorts before items/0002_items');
    expect(early.stderr).toContain('renumber');
    await rename(p.path(`${dir}/0000_early.sql`), p.path(`${dir}/0003_early.sql`));
    expect((await p.baton(['migrate'])).stdout).toContain('applied items/0003_early');

    // Comments and blank lines do not count; a statement does.
    await p.write(`${dir}/0001_notes.sql`, '-- notes\n\nCREATE TABLE notes (x int);  \n');
    expect((await p.baton(['migrate'])).stdout).toContain('the schema is up to date');
    await p.write(`${dir}/0001_notes.sql`, 'CREATE TABLE notes (x bigint);\n');
    const edited = await p.baton(['migrate']);
    expect(edited.code).toBe(1);
    expect(edited.stderr).toContain('migration items/0001_notes was applied, but its file has changed since');

    await p.write(`${dir}/0001_notes.sql`, 'CREATE TABLE notes (x int);\n');
    await rm(p.path(`${dir}/0003_early.sql`));
    const missing = await p.baton(['migrate']);
    expect(missing.code).toBe(0);
    expect(missing.stderr).toContain(
      'migration items/0003_early is recorded as applied, but its file is not in',
    );
  }, 400_000);

  it('diffs with the database when the migrations cannot be replayed in a scratch one, saying so', async () => {
    const p = await project('postgres');
    expect((await p.baton(['sql', 'CREATE TABLE other (id int)'])).code).toBe(0);
    // A view on a table that is not the queue's: the scratch database has no such table.
    await p.write(
      'migrations/items/0001_init.sql',
      'CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\nCREATE VIEW other_ids AS SELECT id FROM other;\n',
    );
    expect((await p.baton(['migrate'])).code).toBe(0);
    const made = await p.baton(['make-migration', 'items', '-m', 'add price'], '2');
    expect(made.code).toBe(0);
    expect(made.stderr).toContain('cannot be replayed in a scratch database (items/0001_init: ');
    expect(made.stderr).toContain('relation "other" does not exist');
    expect(await readFile(p.path('migrations/items/0002_add_price.sql'), 'utf8')).toMatch(
      /ALTER TABLE "items" ADD COLUMN "price" integer/,
    );
  }, 400_000);
});
