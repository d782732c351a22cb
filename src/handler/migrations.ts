// Handler migrations: each queue may keep numbered SQL files in its migrations folder (by default
// `<handler folder>/migrations/<queue>/`). `migrate` applies them with Baton's own, in one transaction
// under an advisory lock; `make-migration` writes the next file from the difference between the
// handler's drizzle schema and what the queue's migrations give (replayed into a scratch database), as
// Alembic's autogenerate does. The first file (the baseline) creates the tables, in a form that also
// applies where they exist already (tables that `run` created before the queue had migrations).
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { SQL } from 'drizzle-orm';
import { is } from 'drizzle-orm';
import { getTableConfig, PgDialect, PgTable } from 'drizzle-orm/pg-core';

import type { QueueConfig } from '../config/types.js';
import { ConfigError } from '../errors.js';
import { describeError } from '../errors.js';
import type { Migration } from '../store/migrate.js';
import { splitStatements } from '../store/migrate.js';
import { openPgliteStore } from '../store/pglite.js';
import type { QueryResult, Store } from '../store/store.js';
import type { Handler } from './handler.js';

const MIGRATION_FILE = /^(\d{4,})_[\w.-]*\.sql$/;
/** Statements about objects other than tables: never generated, since they may belong to someone else. */
const FOREIGN_DROPS = /^\s*DROP\s+(SEQUENCE|TYPE|SCHEMA|VIEW|MATERIALIZED VIEW|FUNCTION|ROLE|POLICY)\b/i;

/** The migrations of a queue, in order; none when it has no migrations folder. */
export async function queueMigrations(queue: QueueConfig): Promise<Migration[]> {
  const files = await migrationFiles(queue.migrations);
  return Promise.all(
    files.map(async (file) => ({
      id: `${queue.name}/${file.replace(/\.sql$/, '')}`,
      sql: await readFile(join(queue.migrations as string, file), 'utf8'),
    })),
  );
}

/**
 * Reads the store with ad-hoc SQL: the store itself, or the `sql` admin operation of the node that owns it
 * (so that `make-migration` diffs the handler file as it is now, loaded by the command, not by the node).
 */
export interface SqlReader {
  query(text: string, params?: readonly unknown[]): Promise<QueryResult>;
}

/** Ids of `migrations` not yet recorded as applied. */
export async function pendingMigrations(
  reader: SqlReader,
  migrations: readonly Migration[],
): Promise<string[]> {
  const applied = new Set(await appliedMigrations(reader));
  return migrations.filter((migration) => !applied.has(migration.id)).map((migration) => migration.id);
}

/** The ids of every migration recorded as applied, in order. */
export async function appliedMigrations(reader: SqlReader): Promise<string[]> {
  const { rows } = await reader.query('SELECT id FROM baton_migrations ORDER BY id');
  return rows.map((row) => String(row['id']));
}

/**
 * The statements that bring the database to the handler's schema, for the handler's own tables only. The
 * database is only read (its catalogs): nothing is changed.
 */
export async function schemaDiff(reader: SqlReader, handler: Handler): Promise<string[]> {
  const tables = handlerTables(handler);
  if (tables.length === 0) {
    throw new ConfigError(`the handler of queue "${handler.queue}" exports no drizzle tables in \`schema\``, {
      key: `queues.${handler.queue}.handler`,
    });
  }
  const names = tables.map((table) => getTableConfig(table).name);
  const schemas = [...new Set(tables.map((table) => getTableConfig(table).schema ?? 'public'))];
  const { pushSchema } = await import('drizzle-kit/api');
  // drizzle-kit only reads the catalogs through execute(): give it the reader's rows.
  const dialect = new PgDialect();
  const database = {
    execute: async (query: SQL) => {
      const { sql: text, params } = dialect.sqlToQuery(query);
      return { rows: (await reader.query(text, params)).rows };
    },
  };
  const diff = await withStdoutSilenced(() =>
    pushSchema(
      { ...handler.schema },
      database as unknown as Parameters<typeof pushSchema>[1],
      schemas,
      names,
    ),
  );
  // drizzle-kit empties a table whose column changes type when it holds rows: a migration never does.
  return diff.statementsToExecute.filter(
    (statement) => !FOREIGN_DROPS.test(statement) && !/^\s*TRUNCATE\b/i.test(statement),
  );
}

/**
 * The statements that bring what the queue's `migrations` give to the handler's schema: the migrations are
 * replayed into a scratch database in memory, which is then diffed. Resolves to the reason instead when they
 * cannot be replayed there (an extension the embedded PostgreSQL lacks, a table of someone else's…).
 */
export async function replayedSchemaDiff(
  handler: Handler,
  migrations: readonly Migration[],
): Promise<{ statements: string[] } | { failure: string }> {
  let scratch: Store;
  try {
    scratch = await openPgliteStore(undefined);
  } catch (error) {
    return { failure: describeError(error) };
  }
  try {
    for (const migration of migrations) {
      for (const statement of splitStatements(migration.sql)) {
        try {
          await scratch.query(statement);
        } catch (error) {
          return { failure: `${migration.id}: ${describeError(error)}` };
        }
      }
    }
    return { statements: await schemaDiff(scratch, handler) };
  } finally {
    await scratch.close();
  }
}

/** The statements that create the handler's tables on an empty database, as `run` creates them. */
export async function createStatements(handler: Handler): Promise<string[]> {
  const { generateDrizzleJson, generateMigration } = await import('drizzle-kit/api');
  return generateMigration(generateDrizzleJson({}), generateDrizzleJson({ ...handler.schema }));
}

/**
 * A statement of a baseline in a form that does nothing where its object exists already: `IF NOT EXISTS`
 * where PostgreSQL has it; otherwise in a block that ignores the duplicate (or, for a rename, the missing
 * old name). Statements that set a state (ALTER COLUMN … SET …) are idempotent as they are.
 */
export function idempotent(statement: string): string {
  const text = statement.trim().replace(/;$/, '');
  for (const [pattern, replacement] of IF_EXISTS_FORMS) {
    if (pattern.test(text)) return `${text.replace(pattern, replacement)};`;
  }
  if (/^ALTER\s+TABLE\s+.*\sRENAME\s/is.test(text)) return ignoring(text, RENAMED);
  if (/^CREATE\s/i.test(text) || /^ALTER\s+TABLE\s+\S+\s+ADD\s/i.test(text))
    return ignoring(text, DUPLICATES);
  return `${text};`;
}

const IF_EXISTS_FORMS: readonly (readonly [RegExp, string])[] = [
  [/^CREATE\s+TABLE\s+(?!IF\s+NOT\s+EXISTS)/i, 'CREATE TABLE IF NOT EXISTS '],
  [/^CREATE\s+(UNIQUE\s+)?INDEX\s+(?!IF\s+NOT\s+EXISTS|CONCURRENTLY)/i, 'CREATE $1INDEX IF NOT EXISTS '],
  [/^CREATE\s+(SCHEMA|SEQUENCE)\s+(?!IF\s+NOT\s+EXISTS)/i, 'CREATE $1 IF NOT EXISTS '],
  [/^DROP\s+(TABLE|INDEX|SEQUENCE|VIEW|TYPE)\s+(?!IF\s+EXISTS)/i, 'DROP $1 IF EXISTS '],
  [/^(ALTER\s+TABLE\s+\S+\s+ADD\s+COLUMN)\s+(?!IF\s+NOT\s+EXISTS)/i, '$1 IF NOT EXISTS '],
  [/^(ALTER\s+TABLE\s+\S+\s+DROP\s+(?:COLUMN|CONSTRAINT))\s+(?!IF\s+EXISTS)/i, '$1 IF EXISTS '],
  [/^(ALTER\s+TYPE\s+\S+\s+ADD\s+VALUE)\s+(?!IF\s+NOT\s+EXISTS)/i, '$1 IF NOT EXISTS '],
];
const DUPLICATES = 'duplicate_object OR duplicate_table OR duplicate_column';
const RENAMED = 'undefined_table OR undefined_column OR undefined_object';

/** On one line, so that the semicolons inside do not end the statement for splitStatements. */
function ignoring(statement: string, conditions: string): string {
  return `DO $baton$ BEGIN ${statement}; EXCEPTION WHEN ${conditions} THEN NULL; END $baton$;`;
}

function handlerTables(handler: Handler): PgTable[] {
  return Object.values(handler.schema).filter((value): value is PgTable => is(value, PgTable));
}

/** Writes the queue's next migration file; returns its path. */
export async function writeMigration(
  queue: QueueConfig,
  message: string,
  statements: readonly string[],
  notes: readonly string[] = [],
): Promise<string> {
  const dir = queue.migrations;
  if (!dir) {
    throw new ConfigError('this queue has no migrations folder (its handler is a package)', {
      key: `queues.${queue.name}.migrations`,
    });
  }
  const files = await migrationFiles(dir);
  const last = files.length > 0 ? Number(MIGRATION_FILE.exec(files[files.length - 1] ?? '')?.[1] ?? 0) : 0;
  const slug =
    message
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '_')
      .replace(/^_|_$/g, '')
      .slice(0, 60) || 'migration';
  const path = join(dir, `${String(last + 1).padStart(4, '0')}_${slug}.sql`);
  const header = [
    `-- ${message || 'migration'}`,
    `-- Generated by \`baton make-migration ${queue.name}\` on ${new Date().toISOString()}; review before applying.`,
    "-- Only statements about the handler's own tables are generated: write any others by hand.",
    ...notes.map((note) => `-- ${note}`),
  ];
  await mkdir(dir, { recursive: true });
  await writeFile(
    path,
    `${header.join('\n')}\n\n${statements.map((s) => s.trim()).join('\n--> statement-breakpoint\n')}\n`,
  );
  return path;
}

async function migrationFiles(dir: string | undefined): Promise<string[]> {
  if (!dir) return [];
  try {
    return (await readdir(dir)).filter((file) => MIGRATION_FILE.test(file)).sort();
  } catch (error) {
    if (typeof error === 'object' && error !== null && 'code' in error && error.code === 'ENOENT') return [];
    throw error;
  }
}

/** drizzle-kit draws a progress spinner on stdout, which would garble command output: mute it meanwhile. */
async function withStdoutSilenced<T>(work: () => Promise<T>): Promise<T> {
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = () => true;
  try {
    return await work();
  } finally {
    process.stdout.write = write;
  }
}
