// Baton's schema: the PostgreSQL schema (`[store] schema`, "baton" by default) that holds Baton's own tables,
// apart from the tables of the application it runs in. Every connection Baton opens appends it to the end of
// its search path, so Baton's unqualified statements find their tables there while handlers' unqualified
// tables keep resolving (and being created) in the connection's default schema, normally public.
// Installations made before this schema existed kept their tables in public: they are moved on start.
import { sql } from 'drizzle-orm';

import { DEFAULT_STORE_SCHEMA } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import type { Row, Tx } from './store.js';
import { executeIn } from './store.js';

export { DEFAULT_STORE_SCHEMA };

/**
 * The expression that appends the schema (`$1`) to the session's search path, after the server's or the
 * role's default (`"$user", public`), or makes it the whole path when that default is empty.
 */
export const APPEND_TO_SEARCH_PATH_EXPRESSION = `set_config('search_path',
  CASE WHEN btrim(current_setting('search_path')) = '' THEN quote_ident($1)
       ELSE current_setting('search_path') || ', ' || quote_ident($1) END, false)`;

/** Appends the schema (`$1`) to the session's search path: run once on each new connection. */
export const APPEND_TO_SEARCH_PATH = `SELECT ${APPEND_TO_SEARCH_PATH_EXPRESSION}`;

/**
 * Every table of Baton's migrations up to 0008, the layout of installations made before Baton's schema
 * existed (baton_redis_ledger is 0004's baton_batch_ledger in a store at 0003). This list never grows: tables
 * of later migrations are created in Baton's schema.
 */
export const LEGACY_TABLES = [
  'baton_migrations',
  'baton_queue_records',
  'baton_queue_errors',
  'baton_consumers',
  'baton_redis_ledger',
  'baton_batch_ledger',
  'baton_fence',
  'baton_leases',
  'baton_members',
  'baton_event_head',
  'baton_events',
  'baton_event_listeners',
  'baton_task_runs',
] as const;

/** The built-in migration that every installation in a schema of its own has applied (it changes nothing). */
export const OWN_SCHEMA_MIGRATION = 'baton/0010_own_schema';

/**
 * The NOTIFY channel `base` of the installation in `schema`: installations side by side in one database do
 * not wake each other (a foreign event offset would make followers skip events of their own log).
 */
export function batonChannel(schema: string, base: string): string {
  return `${schema}.${base}`;
}

/** A schema name in a statement: it matches STORE_SCHEMA_PATTERN, but quoted all the same. */
export function quotedSchema(schema: string): string {
  return `"${schema.replace(/"/g, '""')}"`;
}

/** What settleBatonSchema did about an old layout. */
export interface SchemaMove {
  /** The schema the tables were found in. */
  readonly from: string;
  readonly tables: readonly string[];
}

/**
 * Inside the migration transaction (under the migration lock): creates Baton's schema, moves an old layout's
 * tables into it (those found on the search path, in public normally), and refuses a store where Baton's
 * tables in another schema on the search path would be used in place of its own. Returns what it moved.
 */
export async function settleBatonSchema(tx: Tx, schema: string): Promise<SchemaMove | undefined> {
  // Only when missing: CREATE SCHEMA IF NOT EXISTS needs the right to create schemas even when it exists,
  // which a role given a schema made for it need not have.
  const [exists] = await executeIn(
    tx,
    sql`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = ${schema}`,
  );
  if (exists?.['n'] !== 1) await tx.execute(sql.raw(`CREATE SCHEMA ${quotedSchema(schema)}`));
  let moved: SchemaMove | undefined;
  for (;;) {
    const found = await foreignTables(tx, schema);
    const first = found[0];
    if (!first) return moved;
    const from = first.schema;
    const tables = found.filter((table) => table.schema === from).map((table) => table.name);
    const ours = await hasMigrations(tx, schema);
    if (moved || ours || !tables.includes('baton_migrations') || (await isOwnSchema(tx, from))) {
      throw shadowed(schema, found, ours);
    }
    for (const table of tables) {
      await tx.execute(
        sql.raw(`ALTER TABLE ${quotedSchema(from)}.${table} SET SCHEMA ${quotedSchema(schema)}`),
      );
    }
    moved = { from, tables };
  }
}

interface Found {
  readonly schema: string;
  readonly name: string;
}

/** Baton's old tables in schemas of the search path other than Baton's, in the order of the path. */
async function foreignTables(tx: Tx, schema: string): Promise<Found[]> {
  const rows = await executeIn(
    tx,
    sql`SELECT n.nspname::text AS schema, c.relname::text AS name
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND c.relname::text = ANY (${`{${LEGACY_TABLES.join(',')}}`}::text[])
           AND n.nspname = ANY (current_schemas(false)) AND n.nspname::text <> ${schema}
         ORDER BY array_position(current_schemas(false), n.nspname), c.relname`,
  );
  return rows.map((row: Row) => ({ schema: String(row['schema']), name: String(row['name']) }));
}

async function hasMigrations(tx: Tx, schema: string): Promise<boolean> {
  const [row] = await executeIn(
    tx,
    sql`SELECT to_regclass(${`${quotedSchema(schema)}.baton_migrations`}) IS NOT NULL AS present`,
  );
  return row?.['present'] === true;
}

/** True when `schema` holds an installation that lives in a schema of its own (not an old layout). */
async function isOwnSchema(tx: Tx, schema: string): Promise<boolean> {
  const rows = await executeIn(
    tx,
    sql.raw(`SELECT 1 FROM ${quotedSchema(schema)}.baton_migrations WHERE id = '${OWN_SCHEMA_MIGRATION}'`),
  );
  return rows.length > 0;
}

function shadowed(schema: string, found: readonly Found[], ours: boolean): ConfigError {
  const names = found.map((table) => `${table.schema}.${table.name}`).join(', ');
  const what = ours
    ? `Baton's tables are in schema ${schema}, and ${names} would be used in their place`
    : `${names} would be used in place of Baton's tables in schema ${schema}`;
  return new ConfigError(
    `${what}: they come before it on the search path. Another installation's tables (or a copy) are there: ` +
      'give each installation its own [store] schema, and move or rename these tables',
    { key: 'store.schema' },
  );
}
