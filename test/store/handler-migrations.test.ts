// The rules of handler migrations without the CLI: a baseline applies to an empty database and again where
// its objects exist; applied migrations are checked for order and text; a refused statement is described by
// PostgreSQL's reason whatever wraps it. On PGlite.
import { index, integer, pgEnum, pgTable, serial, text, uniqueIndex } from 'drizzle-orm/pg-core';
import { afterEach, describe, expect, it } from 'vitest';

import { describeError, MigrationRefusedError, StatementError } from '../../src/errors.js';
import type { Handler } from '../../src/handler/handler.js';
import { idempotent, replayedSchemaDiff } from '../../src/handler/migrations.js';
import type { Migration } from '../../src/store/migrate.js';
import { applyMigrations, checkMigrations, migrationChecksum } from '../../src/store/migrate.js';
import type { TempStore } from '../support/pglite.js';
import { openTempStore } from '../support/pglite.js';

const mood = pgEnum('mood', ['calm', 'busy']);
const owners = pgTable('owners', { id: serial('id').primaryKey(), name: text('name').notNull() }, (t) => [
  uniqueIndex('owners_name').on(t.name),
]);
const pets = pgTable(
  'pets',
  {
    id: serial('id').primaryKey(),
    owner: integer('owner').references(() => owners.id),
    mood: mood('mood'),
  },
  (t) => [index('pets_owner').on(t.owner)],
);
const handler = { queue: 'pets', schema: { mood, owners, pets } } as unknown as Handler;

let temp: TempStore | undefined;
afterEach(async () => {
  await temp?.dispose();
  temp = undefined;
});

describe('a baseline', () => {
  it('creates enums, tables, indexes and constraints, and applies again where they exist', async () => {
    const replayed = await replayedSchemaDiff(handler, []);
    if (!('statements' in replayed)) throw new Error(replayed.failure);
    const baseline = replayed.statements.map(idempotent).join('\n--> statement-breakpoint\n');
    expect(baseline).toMatch(/CREATE TABLE IF NOT EXISTS "owners"/);
    expect(baseline).toMatch(/CREATE UNIQUE INDEX IF NOT EXISTS "owners_name"/);
    expect(baseline).toMatch(/DO \$baton\$ BEGIN CREATE TYPE "public"\."mood"/);
    expect(baseline).toMatch(/DO \$baton\$ BEGIN ALTER TABLE "pets" ADD CONSTRAINT/);

    temp = await openTempStore();
    const { store } = temp;
    await applyMigrations(store, [{ id: 'pets/0001_init', sql: baseline }]);
    // A database where the objects exist already (created as `run` does): the same file applies.
    await applyMigrations(store, [{ id: 'other/0001_init', sql: baseline }]);
    const { rows } = await store.query(
      "SELECT count(*)::int AS n FROM pg_constraint WHERE conrelid = 'pets'::regclass AND contype = 'f'",
    );
    expect(rows[0]?.['n']).toBe(1);
  }, 120_000);

  it('leaves statements that set a state as they are, and wraps renames', () => {
    expect(idempotent('ALTER TABLE "a" ALTER COLUMN "x" SET NOT NULL;')).toBe(
      'ALTER TABLE "a" ALTER COLUMN "x" SET NOT NULL;',
    );
    expect(idempotent('ALTER TABLE "a" DROP COLUMN "x";')).toBe('ALTER TABLE "a" DROP COLUMN IF EXISTS "x";');
    expect(idempotent('ALTER TABLE "a" RENAME COLUMN "x" TO "y";')).toMatch(
      /WHEN undefined_table OR undefined_column/,
    );
  });
});

describe('checkMigrations', () => {
  const m = (id: string, sql = 'SELECT 1;'): Migration => ({ id, sql });
  const recorded = (entries: Record<string, string | null>) => new Map(Object.entries(entries));

  it('gives the pending migrations in order', () => {
    const pending = checkMigrations(
      [m('q/0001_a'), m('q/0002_b'), m('r/0001_a')],
      recorded({ 'q/0001_a': null }),
    );
    expect(pending.map((x) => x.id)).toEqual(['q/0002_b', 'r/0001_a']);
  });

  it('refuses one that sorts before an applied one of its queue, naming both', () => {
    expect(() => checkMigrations([m('q/0000_early'), m('q/0001_a')], recorded({ 'q/0001_a': null }))).toThrow(
      new MigrationRefusedError(
        'migration q/0000_early sorts before q/0001_a, which is applied already, but is not applied itself: renumber its file to come after q/0001_a (files apply in the order of their names)',
      ),
    );
    // Another queue's applied migrations do not count.
    expect(checkMigrations([m('q/0001_a')], recorded({ 'r/0002_b': null }))).toHaveLength(1);
  });

  it("refuses an applied one whose statements changed, not one whose comments did; nor Baton's own", () => {
    const sum = migrationChecksum('CREATE TABLE t (x int);\n');
    expect(migrationChecksum('-- why\r\n\r\nCREATE TABLE t (x int);   \r\n')).toBe(sum);
    expect(
      checkMigrations([m('q/0001_a', '-- note\nCREATE TABLE t (x int);')], recorded({ 'q/0001_a': sum })),
    ).toEqual([]);
    expect(() =>
      checkMigrations([m('q/0001_a', 'CREATE TABLE t (x bigint);')], recorded({ 'q/0001_a': sum })),
    ).toThrow(/migration q\/0001_a was applied, but its file has changed since/);
    expect(checkMigrations([m('baton/0001_a', 'SELECT 2;')], recorded({ 'baton/0001_a': sum }))).toEqual([]);
    // Applied before checksums were recorded: not checked (it gets one at the next migrate).
    expect(checkMigrations([m('q/0001_a', 'SELECT 2;')], recorded({ 'q/0001_a': null }))).toEqual([]);
  });
});

describe('describeError', () => {
  it("describes drizzle's report of a refused statement by the database's reason, without parameters", () => {
    const cause = Object.assign(new Error('relation "x" already exists'), { code: '42P07' });
    const drizzle = Object.assign(new Error('Failed query: CREATE TABLE x ()\nparams: secret'), {
      query: 'CREATE TABLE x ()',
      params: ['secret'],
      cause,
    });
    expect(describeError(drizzle)).toBe(
      'StatementError: relation "x" already exists (SQLSTATE 42P07)\nFailed query: CREATE TABLE x ()',
    );
    expect(describeError(cause)).toBe('StatementError: relation "x" already exists (SQLSTATE 42P07)');
    const refused = new StatementError('kept as it is', { sqlState: '23505' });
    expect(describeError(refused)).toBe('StatementError: kept as it is');
  });
});
