// The embedded store: PostgreSQL compiled to WebAssembly, running in this process on a data folder.
// Same SQL, schema and migrations as a server. One process at a time (see store/lock.ts); it survives a
// process crash but not a power loss, since PGlite runs without fsync.
import { mkdir } from 'node:fs/promises';

import { PGlite } from '@electric-sql/pglite';
import type { SQL } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/pglite';

import { BackendUnavailableError } from '../errors.js';
import { APPEND_TO_SEARCH_PATH, DEFAULT_STORE_SCHEMA } from './baton-schema.js';
import type { QueryResult, Row, Store, Tx } from './store.js';
import { rowsOf, withDatabaseReason } from './store.js';

/** Opens the embedded store in the data folder `path`, or a scratch one in memory without it. */
export async function openPgliteStore(path?: string, schema = DEFAULT_STORE_SCHEMA): Promise<Store> {
  if (path !== undefined) await mkdir(path, { recursive: true });
  let client: PGlite;
  try {
    client = path === undefined ? await PGlite.create() : await PGlite.create(path);
  } catch (error) {
    throw new BackendUnavailableError('store', `cannot open the embedded database in ${path ?? 'memory'}`, {
      cause: error,
    });
  }
  // One connection: Baton's schema ends its search path for good (see baton-schema.ts).
  await explained(() => client.query(APPEND_TO_SEARCH_PATH, [schema])).catch(async (error: unknown) => {
    await client.close().catch(() => undefined);
    throw error;
  });
  const db = drizzle(client);
  let closed = false;

  return {
    kind: 'pglite',
    exclusive: true,
    schema,
    transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
      return explained(() => db.transaction((tx) => fn(tx)));
    },
    execute(query: SQL): Promise<Row[]> {
      return explained(async () => rowsOf(await db.execute(query)));
    },
    query(text: string, params: readonly unknown[] = []): Promise<QueryResult> {
      return explained(async () => {
        const result = await client.query<Row>(text, [...params]);
        return { columns: result.fields.map((field) => field.name), rows: result.rows };
      });
    },
    async ping(): Promise<boolean> {
      if (closed) return false;
      try {
        await client.query('select 1');
        return true;
      } catch {
        return false;
      }
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await client.close();
    },
  };
}

/** A statement PGlite refused rejects with its reason (StatementError), not drizzle's "Failed query". */
async function explained<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw withDatabaseReason(error);
  }
}
