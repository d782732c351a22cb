// The embedded store: PostgreSQL compiled to WebAssembly, running in this process on a data folder.
// Same SQL, schema and migrations as a server. One process at a time (see store/lock.ts); it survives a
// process crash but not a power loss, since PGlite runs without fsync.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import { PGlite } from '@electric-sql/pglite';
import type { SQL } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/pglite';

import { BackendUnavailableError } from '../errors.js';
import type { Logger } from '../log.js';
import { installedPgliteVersion, seedStore } from './seed.js';
import type { QueryResult, Row, Store, Tx } from './store.js';
import { rowsOf, withDatabaseReason } from './store.js';

export interface PgliteStoreOptions {
  /**
   * PostgreSQL's shared_buffers for this opening ('16MB'); default: the cluster's postgresql.conf (128MB).
   * PGlite writes all of it when it starts, so it is most of the memory of a short command.
   */
  readonly sharedBuffers?: string | undefined;
  /** Told how a new store was made (from the seed, or by initdb). */
  readonly log?: Logger | undefined;
}

export async function openPgliteStore(path: string, options: PgliteStoreOptions = {}): Promise<Store> {
  let client: PGlite;
  try {
    if (!existsSync(join(path, 'PG_VERSION'))) await createCluster(path, options.log);
    client = await PGlite.create({
      dataDir: path,
      ...(options.sharedBuffers !== undefined
        ? { startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${options.sharedBuffers}`] }
        : {}),
    });
  } catch (error) {
    throw new BackendUnavailableError('store', `cannot open the embedded database in ${path}`, {
      cause: error,
    });
  }
  const db = drizzle(client);
  let closed = false;

  return {
    kind: 'pglite',
    exclusive: true,
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
