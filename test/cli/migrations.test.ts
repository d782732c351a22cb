// `make-migration` writes a migration from the difference between a handler's schema and the database;
// `migrate` applies it once, even when two processes migrate at the same time. On PGlite and PostgreSQL.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

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

async function project(store: 'embedded' | 'postgres') {
  const toml =
    `[node]\ndata_dir = "data"\n[http]\nenabled = false\n${await storeToml(store)}` +
    `[queues.items]\nhandler = "${join(FIXTURES_DIR, 'items-handler.ts')}"\nmigrations = "./migrations/items"\n`;
  const created = await tempProject({ toml });
  const baton = (args: string[], version = '1') =>
    runBaton(['-c', created.configPath, ...args], { env: { ITEMS_SCHEMA_VERSION: version } });
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
      /CREATE TABLE "items"/,
    );

    const applied = await p.baton(['migrate']);
    expect(applied.code).toBe(0);
    expect(applied.stdout).toContain('applied items/0001_create_items');
    // Not a terminal: progress comes as plain lines on stderr.
    expect(applied.stderr).toMatch(/^migrating: 1\/1$/m);

    const unchanged = await p.baton(['make-migration', 'items', '-m', 'nothing']);
    expect(unchanged.stdout).toContain('already matches');

    const second = await p.baton(['make-migration', 'items', '-m', 'add price'], '2');
    expect(second.code).toBe(0);
    expect(await readFile(p.path('migrations/items/0002_add_price.sql'), 'utf8')).toMatch(
      /ALTER TABLE "items" ADD COLUMN "price" integer/,
    );
    const refused = await p.baton(['make-migration', 'items', '-m', 'again'], '2');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('apply the pending migrations first');

    expect((await p.baton(['migrate'], '2')).stdout).toContain('applied items/0002_add_price');
    expect((await p.baton(['migrate'], '2')).stdout).toContain('the schema is up to date');
    const columns = await p.baton([
      'sql',
      "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'items'",
    ]);
    expect(columns.stdout.trim()).toBe('id,name,price');
  });
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
  });
});

describe('make-migration while a node owns the embedded store', () => {
  it('diffs the handler as the command loads it now, not as the node loaded it at its start', async () => {
    const port = await freePort();
    const toml =
      `[node]\ndata_dir = "data"\n[log]\nlevel = "warn"\n[http]\nport = ${port}\n` +
      `[queues.items]\nhandler = "${join(FIXTURES_DIR, 'items-handler.ts')}"\nmigrations = "./migrations/items"\n`;
    const p = await tempProject({ toml });
    const baton = (args: string[], version: string) =>
      runBaton(['-c', p.configPath, ...args], { env: { ITEMS_SCHEMA_VERSION: version } });
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
  }, 120_000);
});
