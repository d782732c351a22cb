// Opens what a node or a CLI command needs of the sink database: the store lock (embedded store), the
// store itself with Baton's migrations applied, and the store-backed queue backend. Closes in reverse.
import type { ResolvedConfig } from '../config/types.js';
import { BackendUnavailableError, StoreLockedError } from '../errors.js';
import { StoreQueueBackend } from '../queue/store-queue.js';
import type { LockOwner, StoreLock } from '../store/lock.js';
import { acquireStoreLock } from '../store/lock.js';
import { applyMigrations, builtinMigrations } from '../store/migrate.js';
import { openPgliteStore } from '../store/pglite.js';
import type { Store } from '../store/store.js';

export interface Storage {
  readonly store: Store;
  readonly backend: StoreQueueBackend;
  readonly lock: StoreLock | undefined;
  /** Migration ids applied while opening. */
  readonly migrated: readonly string[];
  close(): Promise<void>;
}

export async function openStorage(config: ResolvedConfig): Promise<Storage> {
  const attempt = await acquireStoreLock(config.node.dataDir, config.node.name).catch((error: unknown) => {
    throw new BackendUnavailableError('store', `cannot use the data folder ${config.node.dataDir}`, {
      cause: error,
    });
  });
  if (!attempt.acquired) throw lockedError(config, attempt.owner);
  const { lock } = attempt;
  let store: Store | undefined;
  try {
    store = await openPgliteStore(config.store.path);
    const migrated = await applyMigrations(store, await builtinMigrations());
    const backend = new StoreQueueBackend(store);
    const opened = store;
    return {
      store: opened,
      backend,
      lock,
      migrated,
      async close(): Promise<void> {
        await backend.close();
        await opened.close();
        await lock.release();
      },
    };
  } catch (error) {
    await store?.close().catch(() => undefined);
    await lock.release();
    throw error;
  }
}

function lockedError(config: ResolvedConfig, owner: LockOwner): StoreLockedError {
  const where = owner.address ? ` at ${owner.address}` : ' (its HTTP API is not listening)';
  return new StoreLockedError(
    `the embedded store in ${config.node.dataDir} is in use by ${owner.node ?? 'another node'} (pid ${owner.pid})${where}`,
    owner.pid,
  );
}
