// Bringing the store's schema up to date: Baton's migrations, each queue's migrations, and the tables of
// handlers whose queue has no migrations (created from their drizzle schema). Shared by a running node
// and by CLI commands (through the admin operations).
import type { ResolvedConfig } from '../config/types.js';
import { PendingMigrationsError, UnknownQueueError } from '../errors.js';
import type { Handler } from './handler.js';
import type { SqlReader } from './migrations.js';
import { pendingMigrations, queueMigrations, schemaDiff, writeMigration } from './migrations.js';
import { createMissingTables } from './tables.js';
import type { Migration, MigrationProgress } from '../store/migrate.js';
import { applyMigrations, builtinMigrations } from '../store/migrate.js';
import type { Store } from '../store/store.js';

export interface SchemaUpdate {
  /** Migration ids applied, in order. */
  readonly migrated: string[];
  /** Tables created from handler schemas (queues without migrations). */
  readonly created: string[];
}

export interface NewMigration {
  /** The file written; undefined when the database already matches the schema. */
  readonly path: string | undefined;
  readonly statements: string[];
}

/**
 * Applies the queues' pending migrations, then creates the missing tables of queues that have none.
 * Baton's own migrations are applied by whoever opens the store (openStorage), before this.
 */
export async function updateSchema(
  store: Store,
  config: ResolvedConfig,
  handlers: readonly Handler[],
  onApplied?: MigrationProgress,
): Promise<SchemaUpdate> {
  const perQueue = await Promise.all(Object.values(config.queues).map(queueMigrations));
  const migrated = await applyMigrations(store, perQueue.flat(), onApplied);
  const unmanaged = handlers.filter((handler) => {
    const index = Object.keys(config.queues).indexOf(handler.queue);
    return (perQueue[index]?.length ?? 0) === 0;
  });
  const created = await createMissingTables(store, unmanaged);
  return { migrated, created };
}

/**
 * Writes the next migration of `queue` from the difference between its handler's schema and the store,
 * which is only read (through `reader`: the store, or the owner node's `sql`).
 */
export async function makeMigration(
  reader: SqlReader,
  config: ResolvedConfig,
  handler: Handler,
  message: string,
): Promise<NewMigration> {
  const queue = config.queues[handler.queue];
  if (!queue) throw new UnknownQueueError(handler.queue, Object.keys(config.queues));
  const all: Migration[] = [...(await builtinMigrations()), ...(await queueMigrations(queue))];
  const pending = await pendingMigrations(reader, all);
  if (pending.length > 0) throw new PendingMigrationsError(pending);
  const statements = await schemaDiff(reader, handler);
  if (statements.length === 0) return { path: undefined, statements };
  return { path: await writeMigration(queue, message, statements), statements };
}
