// Opens what a node or a CLI command needs of the sink database: the store (with the owner lock for the
// embedded store) with Baton's migrations applied, and the store-backed queue backend. Closes in reverse.
import type { ResolvedConfig } from '../config/types.js';
import { BackendUnavailableError, StoreLockedError } from '../errors.js';
import type { Logger } from '../log.js';
import { StoreQueueBackend } from '../queue/store-queue.js';
import type { LockOwner, StoreLock } from '../store/lock.js';
import { acquireStoreLock } from '../store/lock.js';
import { applyMigrations, builtinMigrations } from '../store/migrate.js';
import { openPgliteStore } from '../store/pglite.js';
import { openPostgresStore } from '../store/postgres.js';
import type { Store } from '../store/store.js';

export interface Storage {
  readonly store: Store;
  readonly backend: StoreQueueBackend;
  /** The owner lock of the embedded store; undefined on a server store, which any number may share. */
  readonly lock: StoreLock | undefined;
  /** Migration ids applied while opening. */
  readonly migrated: readonly string[];
  close(): Promise<void>;
}

export async function openStorage(config: ResolvedConfig, log: Logger): Promise<Storage> {
  let lock: StoreLock | undefined;
  let store: Store | undefined;
  try {
    if (config.store.kind === 'embedded') {
      lock = await takeLock(config);
      store = await openPgliteStore(config.store.path);
    } else {
      store = await openPostgresStore(config.store, {
        log,
        startupTimeoutMs: config.node.startupTimeoutMs,
        applicationName: `baton:${config.node.name}`,
      });
    }
    const migrated = await applyMigrations(store, await builtinMigrations());
    const backend = new StoreQueueBackend(store, log);
    const opened = store;
    const held = lock;
    return {
      store: opened,
      backend,
      lock: held,
      migrated,
      async close(): Promise<void> {
        await backend.close();
        await opened.close();
        await held?.release();
      },
    };
  } catch (error) {
    await store?.close().catch(() => undefined);
    await lock?.release();
    throw error;
  }
}

async function takeLock(config: ResolvedConfig): Promise<StoreLock> {
  const attempt = await acquireStoreLock(config.node.dataDir, config.node.name).catch((error: unknown) => {
    throw new BackendUnavailableError('store', `cannot use the data folder ${config.node.dataDir}`, {
      cause: error,
    });
  });
  if (!attempt.acquired) throw lockedError(config, attempt.owner);
  return attempt.lock;
}

function lockedError(config: ResolvedConfig, owner: LockOwner): StoreLockedError {
  const where = owner.address ? ` at ${owner.address}` : ' (its HTTP API is not listening)';
  return new StoreLockedError(
    `the embedded store in ${config.node.dataDir} is in use by ${owner.node ?? 'another node'} (pid ${owner.pid})${where}`,
    owner.pid,
  );
}
