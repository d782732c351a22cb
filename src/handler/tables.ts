// Creates the tables of handler schemas that the database does not have yet (what SQLAlchemy's create_all
// does for Azafea). Existing tables are left alone: changing them is the job of migrations.
import { is, sql } from 'drizzle-orm';
import { getTableConfig, PgTable } from 'drizzle-orm/pg-core';

import type { Store, Tx } from '../store/store.js';
import { lockSchema } from '../store/migrate.js';
import { executeIn } from '../store/store.js';
import type { Handler } from './handler.js';

/** Creates the missing tables of every handler's schema in one transaction; returns their names. */
export async function createMissingTables(store: Store, handlers: readonly Handler[]): Promise<string[]> {
  const tables = schemaTables(handlers);
  if (tables.size === 0) return [];

  return store.transaction(
    async (tx) => {
      // Nodes starting together would race to create the same tables.
      await lockSchema(tx);
      const missing: Record<string, PgTable> = {};
      for (const name of await absent(tx, [...tables.keys()])) missing[name] = tables.get(name) as PgTable;
      const names = Object.keys(missing);
      if (names.length === 0) return [];
      // drizzle-kit is large: load it only when there is something to create.
      const { generateDrizzleJson, generateMigration } = await import('drizzle-kit/api');
      const statements = await generateMigration(generateDrizzleJson({}), generateDrizzleJson(missing));
      for (const statement of statements) await tx.execute(sql.raw(statement));
      return names;
    },
    { schemaChange: true },
  );
}

/** The tables of the handlers' schemas that the database lacks (`schema.table`), without creating any. */
export async function missingTables(store: Store, handlers: readonly Handler[]): Promise<string[]> {
  const tables = schemaTables(handlers);
  if (tables.size === 0) return [];
  return store.transaction((tx) => absent(tx, [...tables.keys()]));
}

/** The drizzle tables of the handlers' schemas by `schema.table`. */
function schemaTables(handlers: readonly Handler[]): Map<string, PgTable> {
  const tables = new Map<string, PgTable>();
  for (const handler of handlers) {
    for (const value of Object.values(handler.schema)) {
      if (is(value, PgTable)) {
        const config = getTableConfig(value);
        tables.set(`${config.schema ?? 'public'}.${config.name}`, value);
      }
    }
  }
  return tables;
}

async function absent(tx: Tx, names: readonly string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const name of names) {
    const [row] = await executeIn(
      tx,
      sql`SELECT to_regclass(${`"${name.replace('.', '"."')}"`}) IS NULL AS missing`,
    );
    if (row?.['missing'] === true) missing.push(name);
  }
  return missing;
}
