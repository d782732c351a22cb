// Applies Baton's own schema migrations (numbered SQL files beside this module) in one transaction under an
// advisory lock, recorded in `baton_migrations`, so two nodes starting at once cannot apply one twice.
// Baton's migrations create their tables in Baton's schema (baton-schema.ts); queues' migrations run on the
// connection's own search path, so their unqualified tables land where the application's do.
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

import { sql } from 'drizzle-orm';

import type { Logger } from '../log.js';
import { sleep } from '../util/sleep.js';
import type { SchemaMove } from './baton-schema.js';
import { quotedSchema, settleBatonSchema } from './baton-schema.js';
import type { Store, Tx } from './store.js';
import { executeIn } from './store.js';

export interface Migration {
  readonly id: string;
  readonly sql: string;
}

const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url));
/** Ids of Baton's own migrations start with it; queues' migrations start with the queue's name. */
const BUILTIN_PREFIX = 'baton/';
/** Key of the advisory lock that serialises migrations across nodes (any constant will do; this is "baton"). */
const MIGRATION_LOCK_KEY = 0x6261746f6e;

export async function builtinMigrations(): Promise<Migration[]> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((name) => name.endsWith('.sql')).sort();
  return Promise.all(
    files.map(async (file) => ({
      id: `${BUILTIN_PREFIX}${file.replace(/\.sql$/, '')}`,
      sql: await readFile(MIGRATIONS_DIR + file, 'utf8'),
    })),
  );
}

/**
 * Inside `tx`: waits for and takes the lock that serialises schema changes across nodes, until `tx` ends.
 * It asks again and again rather than waiting on the server, so that a node waits as long as another node's
 * migration runs, whatever the limit on lock waits (lock_timeout) of a schema change.
 */
export async function lockSchema(tx: Tx): Promise<void> {
  for (;;) {
    const [row] = await executeIn(tx, sql`SELECT pg_try_advisory_xact_lock(${MIGRATION_LOCK_KEY}) AS taken`);
    if (row?.['taken'] === true) return;
    await sleep(SCHEMA_LOCK_POLL_MS);
  }
}

/** How often a schema change looks again at the lock that another node holds. */
const SCHEMA_LOCK_POLL_MS = 250;

/** Told of each migration as it is applied (inside the one transaction): its id, and how many of how many. */
export type MigrationProgress = (id: string, done: number, total: number) => void;

/**
 * Applies the migrations not yet recorded and returns the ids it applied, in order. First it settles Baton's
 * schema: creates it, and moves the tables of an installation made before it existed (told to `log`).
 */
export async function applyMigrations(
  store: Store,
  migrations: readonly Migration[],
  onApplied?: MigrationProgress,
  options: { log?: Logger } = {},
): Promise<string[]> {
  const schema = quotedSchema(store.schema);
  let moved: SchemaMove | undefined;
  const applied = await store.transaction(
    async (tx) => {
      await lockSchema(tx);
      moved = await settleBatonSchema(tx, store.schema);
      await tx.execute(
        sql.raw(
          `CREATE TABLE IF NOT EXISTS ${schema}.baton_migrations (id text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
        ),
      );
      const searchPath = String((await executeIn(tx, sql`SHOW search_path`))[0]?.['search_path']);
      const done = new Set(
        (await executeIn(tx, sql`SELECT id FROM baton_migrations`)).map((row) => String(row['id'])),
      );
      const applied: string[] = [];
      const pending = migrations.filter((migration) => !done.has(migration.id));
      for (const migration of pending) {
        // Baton's own create their tables in its schema; a queue's where the application's are.
        const path = migration.id.startsWith(BUILTIN_PREFIX) ? `${schema}, ${searchPath}` : searchPath;
        await executeIn(tx, sql`SELECT set_config('search_path', ${path}, true)`);
        for (const statement of splitStatements(migration.sql)) await tx.execute(sql.raw(statement));
        await executeIn(tx, sql`INSERT INTO baton_migrations (id) VALUES (${migration.id})`);
        applied.push(migration.id);
        onApplied?.(migration.id, applied.length, pending.length);
      }
      return applied;
    },
    { schemaChange: true },
  );
  if (moved) {
    options.log?.info(
      { from: moved.from, to: store.schema, tables: moved.tables },
      `store: moved Baton's ${moved.tables.length} tables from schema ${moved.from} to schema ${store.schema}`,
    );
  }
  return applied;
}

/**
 * Splits a migration into statements: each ends with a semicolon at the end of a line (or drizzle-kit's
 * `--> statement-breakpoint`). Drivers run one statement per prepared query.
 */
export function splitStatements(text: string): string[] {
  return text
    .split(/;[ \t]*(?:\r?\n|$)|-->\s*statement-breakpoint/)
    .map((chunk) => chunk.trim().replace(/;$/, ''))
    .filter((chunk) =>
      chunk.split('\n').some((line) => line.trim().length > 0 && !line.trim().startsWith('--')),
    );
}

/**
 * Why the store lacks Baton's schema, or undefined when it holds it: `baton_migrations` exists and records
 * `latest` (the newest built-in migration). A store dropped and created again, or emptied, under a running
 * node answers pings but fails every write; readiness asks this (two small queries).
 */
export async function missingSchema(store: Store, latest: string): Promise<string | undefined> {
  const [table] = await store.execute(
    sql`SELECT to_regclass(${`${quotedSchema(store.schema)}.baton_migrations`}) IS NOT NULL AS present`,
  );
  if (table?.['present'] !== true) {
    return `Baton's schema is missing from the store (no table ${store.schema}.baton_migrations): was the database re-created or emptied? Run \`baton migrate\``;
  }
  const [found] = await store.execute(
    sql`SELECT count(*)::int AS n FROM baton_migrations WHERE id = ${latest}`,
  );
  return found?.['n'] === 1
    ? undefined
    : `the store lacks Baton's migration ${latest} (baton_migrations does not record it): run \`baton migrate\``;
}
