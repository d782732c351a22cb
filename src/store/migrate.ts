// Applies migrations (Baton's own, numbered SQL files beside this module, and the queues') in one transaction
// under an advisory lock, recorded with their checksums in `baton_migrations`, so two nodes starting at once
// cannot apply one twice, and a file out of order or changed after it was applied is refused. Baton's
// migrations create their tables in Baton's schema (baton-schema.ts); queues' migrations run on the
// connection's own search path, so their unqualified tables land where the application's do.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

import { sql } from 'drizzle-orm';

import { MigrationRefusedError, StatementError, statementErrorOf } from '../errors.js';
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
/** The prefix of Baton's own migration ids (`baton/0001_queues`); a queue's are its name. */
const BUILTIN_PREFIX = 'baton';
/** Key of the advisory lock that serialises migrations across nodes (any constant will do; this is "baton"). */
const MIGRATION_LOCK_KEY = 0x6261746f6e;

export async function builtinMigrations(): Promise<Migration[]> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((name) => name.endsWith('.sql')).sort();
  return Promise.all(
    files.map(async (file) => ({
      id: `${BUILTIN_PREFIX}/${file.replace(/\.sql$/, '')}`,
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
 * schema: creates it, and moves the tables of an installation made before it existed (told to `log`). Refuses
 * (MigrationRefusedError) a migration that sorts before an applied one of its prefix, and an applied one
 * whose text changed since (see checkMigrations); records each migration's checksum.
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
      const recorded = await recordedMigrations(tx);
      const pending = checkMigrations(migrations, recorded);
      const applied: string[] = [];
      for (const migration of pending) {
        // Baton's own create their tables in its schema; a queue's where the application's are.
        const path = prefixOf(migration.id) === BUILTIN_PREFIX ? `${schema}, ${searchPath}` : searchPath;
        await executeIn(tx, sql`SELECT set_config('search_path', ${path}, true)`);
        await runMigration(tx, migration);
        await executeIn(tx, sql`INSERT INTO baton_migrations (id) VALUES (${migration.id})`);
        applied.push(migration.id);
        onApplied?.(migration.id, applied.length, pending.length);
      }
      await recordChecksums(tx, migrations, recorded);
      return applied;
    },
    { schemaChange: true },
  );
  if (applied.some((id) => prefixOf(id) === BUILTIN_PREFIX)) await analyzeBatonTables(store);
  if (moved) {
    options.log?.info(
      { from: moved.from, to: store.schema, tables: moved.tables },
      `store: moved Baton's ${moved.tables.length} tables from schema ${moved.from} to schema ${store.schema}`,
    );
  }
  return applied;
}

/**
 * ANALYZE of every table in Baton's schema, after Baton's migrations changed it: the planner then has
 * figures for tables that a server without autovacuum, or the embedded store, would never analyze. ANALYZE
 * reads a fixed-size sample, so this is quick at any size; later changes are followed by the queues' upkeep.
 */
async function analyzeBatonTables(store: Store): Promise<void> {
  const tables = await store.execute(
    sql`SELECT tablename FROM pg_tables WHERE schemaname = ${store.schema} ORDER BY tablename`,
  );
  if (tables.length === 0) return;
  const schema = quotedSchema(store.schema);
  // A statement per table: on the embedded store each holds the node's thread for a few milliseconds, where
  // one for all of them (twenty tables and more) holds it for a quarter of a second.
  for (const row of tables) {
    await store.execute(sql.raw(`ANALYZE ${schema}.${quotedSchema(String(row['tablename']))}`));
  }
}

/** Runs a migration's statements; a statement the database refuses is reported with the migration's id. */
async function runMigration(tx: Tx, migration: Migration): Promise<void> {
  for (const statement of splitStatements(migration.sql)) {
    try {
      await tx.execute(sql.raw(statement));
    } catch (error) {
      const refused = statementErrorOf(error);
      if (!refused) throw error;
      throw new StatementError(`migration ${migration.id}: ${refused.message}`, {
        sqlState: refused.sqlState,
        cause: error,
      });
    }
  }
}

/** An applied migration: its checksum, or null when it was applied before checksums were recorded. */
type Recorded = ReadonlyMap<string, string | null>;

/** The recorded migrations with their checksums (none before Baton's migration 0009 added the column). */
async function recordedMigrations(tx: Tx): Promise<Recorded> {
  const rows = (await hasChecksumColumn(tx))
    ? await executeIn(tx, sql`SELECT id, checksum FROM baton_migrations`)
    : await executeIn(tx, sql`SELECT id, NULL AS checksum FROM baton_migrations`);
  return new Map(
    rows.map((row) => [String(row['id']), typeof row['checksum'] === 'string' ? row['checksum'] : null]),
  );
}

async function hasChecksumColumn(tx: Tx): Promise<boolean> {
  const [row] = await executeIn(
    tx,
    sql`SELECT count(*)::int AS n FROM pg_attribute WHERE attrelid = to_regclass('baton_migrations') AND attname = 'checksum' AND NOT attisdropped`,
  );
  return row?.['n'] === 1;
}

/**
 * Records the checksum of each migration that has none yet: those just applied, and those applied before
 * checksums were recorded (their text as it is now is taken as the one applied; checked from then on).
 */
async function recordChecksums(tx: Tx, migrations: readonly Migration[], before: Recorded): Promise<void> {
  if (!(await hasChecksumColumn(tx))) return;
  for (const migration of migrations) {
    if (typeof before.get(migration.id) === 'string') continue;
    await executeIn(
      tx,
      sql`UPDATE baton_migrations SET checksum = ${migrationChecksum(migration.sql)} WHERE id = ${migration.id} AND checksum IS NULL`,
    );
  }
}

/**
 * The migrations of `migrations` not yet applied, in order, after checking them against those `recorded`:
 * - a pending migration that sorts before an applied one of the same prefix (a queue, or `baton`) is
 *   refused: applied now, it would run after a migration that a fresh database runs after it;
 * - an applied migration whose text changed (its checksum differs) is refused: the databases that applied
 *   it did not get what the file says now. Comments, blank lines and trailing spaces do not count. Baton's
 *   own migrations (`baton/…`) are not checked for this: a release may reword them, never change their effect.
 */
export function checkMigrations(migrations: readonly Migration[], recorded: Recorded): Migration[] {
  const pending: Migration[] = [];
  const lastApplied = new Map<string, string>();
  for (const id of recorded.keys()) {
    const prefix = prefixOf(id);
    if (id > (lastApplied.get(prefix) ?? '')) lastApplied.set(prefix, id);
  }
  for (const migration of migrations) {
    const checksum = recorded.get(migration.id);
    if (checksum === undefined) {
      const later = lastApplied.get(prefixOf(migration.id));
      if (later !== undefined && later > migration.id) {
        throw new MigrationRefusedError(
          `migration ${migration.id} sorts before ${later}, which is applied already, but is not applied ` +
            `itself: renumber its file to come after ${later} (files apply in the order of their names)`,
        );
      }
      pending.push(migration);
    } else if (
      checksum !== null &&
      prefixOf(migration.id) !== BUILTIN_PREFIX &&
      checksum !== migrationChecksum(migration.sql)
    ) {
      throw new MigrationRefusedError(
        `migration ${migration.id} was applied, but its file has changed since: put the file back as it was ` +
          'and write the change as a new migration (baton make-migration)',
      );
    }
  }
  return pending;
}

/** What a migration id is numbered within: its queue, or `baton` for Baton's own. */
function prefixOf(id: string): string {
  const slash = id.lastIndexOf('/');
  return slash < 0 ? '' : id.slice(0, slash);
}

/**
 * sha256 of a migration's text without what does not change its effect: comment lines, blank lines,
 * trailing spaces and line endings.
 */
export function migrationChecksum(text: string): string {
  const normalised = text
    .split(/\r?\n/)
    .map((line) => line.trimEnd())
    .filter((line) => line.trim().length > 0 && !line.trim().startsWith('--'))
    .join('\n');
  return createHash('sha256').update(normalised).digest('hex');
}

/**
 * Splits a migration into statements: each ends with a semicolon at the end of a line (or drizzle-kit's
 * `--> statement-breakpoint`), outside a dollar-quoted body (`$$ … $$`, `$tag$ … $tag$`: a function's
 * statements end lines with semicolons too). Drivers run one statement per prepared query. The comment lines
 * before a statement are left out, so that an error quotes the statement, not the file's header.
 */
export function splitStatements(text: string): string[] {
  const chunks: string[] = [];
  const token = /-->\s*statement-breakpoint|--[^\n]*|\$[A-Za-z_]*\$|;[ \t]*(?:\r?\n|$)/g;
  let start = 0;
  let body: string | undefined;
  for (const match of text.matchAll(token)) {
    const found = match[0];
    if (body !== undefined) {
      if (found === body) body = undefined;
    } else if (found.startsWith('$')) {
      body = found;
    } else if (found.startsWith(';') || found.startsWith('-->')) {
      chunks.push(text.slice(start, match.index));
      start = match.index + found.length;
    }
  }
  chunks.push(text.slice(start));
  return chunks
    .map((chunk) =>
      chunk
        .replace(/^(?:[ \t]*(?:--[^\n]*)?\r?\n)+/, '')
        .trim()
        .replace(/;$/, ''),
    )
    .filter((chunk) => chunk.length > 0 && !chunk.startsWith('--'));
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
