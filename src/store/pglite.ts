// The embedded store: PostgreSQL compiled to WebAssembly, running in this process on a data folder.
// Same SQL, schema and migrations as a server. One process at a time (see store/lock.ts); it survives a
// process crash but not a power loss, since PGlite runs without fsync.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import { PGlite } from '@electric-sql/pglite';
import type { SQL } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';
import { drizzle } from 'drizzle-orm/pglite';

import { BackendUnavailableError } from '../errors.js';
import type { Logger } from '../log.js';
import { APPEND_TO_SEARCH_PATH, DEFAULT_STORE_SCHEMA } from './baton-schema.js';
import { installedPgliteVersion, seedStore } from './seed.js';
import type { QueryResult, Row, Store, Tx } from './store.js';
import { rowsOf, withDatabaseReason } from './store.js';

/**
 * A statement of Baton's own (`execute`) that takes this long is logged: while it runs, the node's thread
 * runs it and answers nothing else (a VACUUM of a large drained queue, a bulk delete).
 */
export const SLOW_STATEMENT_MS = 250;

export interface PgliteStoreOptions {
  /** Baton's schema (see baton-schema.ts). Default: "baton". */
  readonly schema?: string | undefined;
  /**
   * PostgreSQL's shared_buffers for this opening ('16MB'); default: the cluster's postgresql.conf (128MB).
   * PGlite writes all of it when it starts, so it is most of the memory of a short command.
   */
  readonly sharedBuffers?: string | undefined;
  /** Told how a new store was made (from the seed, or by initdb), and of slow statements. */
  readonly log?: Logger | undefined;
}

/** Opens the embedded store in the data folder `path`, or a scratch one in memory without it. */
export async function openPgliteStore(
  path: string | undefined,
  options: PgliteStoreOptions = {},
): Promise<Store> {
  const schema = options.schema ?? DEFAULT_STORE_SCHEMA;
  let client: PGlite;
  try {
    if (path !== undefined && !existsSync(join(path, 'PG_VERSION'))) await createCluster(path, options.log);
    client = await PGlite.create({
      ...(path !== undefined ? { dataDir: path } : {}),
      ...(options.sharedBuffers !== undefined
        ? { startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${options.sharedBuffers}`] }
        : {}),
    });
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
      return explained(async () => {
        const started = performance.now();
        const rows = rowsOf(await db.execute(query));
        const ms = Math.round(performance.now() - started);
        if (ms >= SLOW_STATEMENT_MS) tellSlow(options.log, query, ms);
        return rows;
      });
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

function tellSlow(log: Logger | undefined, query: SQL, ms: number): void {
  const text = new PgDialect().sqlToQuery(query).sql.replace(/\s+/g, ' ').trim();
  log?.warn(
    { ms, sql: text.length > 200 ? `${text.slice(0, 200)}…` : text },
    `embedded store: a statement took ${ms} ms, during which the node answered nothing else`,
  );
}

/** A new store: from the seed when there is one for this PGlite; else PGlite runs initdb when it opens. */
async function createCluster(path: string, log: Logger | undefined): Promise<void> {
  if (await seedStore(path)) {
    log?.debug(`created the embedded store in ${path} from the seed`);
    return;
  }
  await mkdir(path, { recursive: true });
  log?.info(
    `creating the embedded store in ${path} (initdb, PGlite ${(await installedPgliteVersion()) ?? '?'} has no seed here): this takes a while`,
  );
}

/** A statement PGlite refused rejects with its reason (StatementError), not drizzle's "Failed query". */
async function explained<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw withDatabaseReason(error);
  }
}
