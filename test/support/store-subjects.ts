// A store queue backend on each kind of store, for tests that run on both: a temporary PGlite store, and a
// fresh PostgreSQL database with Baton's migrations applied.
import { createLogger } from '../../src/log.js';
import { StoreQueueBackend } from '../../src/queue/store-queue.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { openTempStore } from './pglite.js';
import { createTestDatabase } from './postgres.js';

export interface StoreSubject {
  readonly store: Store;
  readonly backend: StoreQueueBackend;
  dispose(): Promise<void>;
}

/** Opens a store queue on the store of `kind` ("pglite" or "postgres"), with `poolSize` connections on PostgreSQL. */
export const STORE_SUBJECTS: Record<string, (poolSize?: number) => Promise<StoreSubject>> = {
  pglite: async () => {
    const temp = await openTempStore();
    const backend = new StoreQueueBackend(temp.store);
    return {
      store: temp.store,
      backend,
      async dispose() {
        await backend.close();
        await temp.dispose();
      },
    };
  },
  postgres: async (poolSize = 4) => {
    const database = await createTestDatabase();
    const log = createLogger({ level: 'silent' });
    const store = await openPostgresStore(
      { kind: 'postgres', url: database.url, poolSize, statementTimeoutMs: 0 },
      { log, startupTimeoutMs: 10_000 },
    );
    await applyMigrations(store, await builtinMigrations());
    const backend = new StoreQueueBackend(store, log);
    await backend.start();
    return {
      store,
      backend,
      async dispose() {
        await backend.close();
        await store.close();
        await database.drop();
      },
    };
  },
};
