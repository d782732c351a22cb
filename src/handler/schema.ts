// Bringing the store's schema up to date: Baton's migrations, each queue's migrations, and the tables of
// handlers whose queue has no migrations (created from their drizzle schema). Shared by a running node
// and by CLI commands (through the admin operations).
import type { ResolvedConfig } from '../config/types.js';
import { PendingMigrationsError, UnknownQueueError } from '../errors.js';
import type { Handler } from './handler.js';
import type { SqlReader } from './migrations.js';
import {
  appliedMigrations,
  createStatements,
  idempotent,
  pendingMigrations,
  queueMigrations,
  replayedSchemaDiff,
  schemaDiff,
  writeMigration,
} from './migrations.js';
import { createMissingTables, missingTables } from './tables.js';
import type { MigrationProgress } from '../store/migrate.js';
import { applyMigrations, builtinMigrations, missingSchema } from '../store/migrate.js';
import type { Store } from '../store/store.js';

export interface SchemaUpdate {
  /** Migration ids applied, in order. */
  readonly migrated: string[];
  /** Tables created from handler schemas (queues without migrations). */
  readonly created: string[];
  /**
   * What the operator should look at: tables of a queue with migrations that its migrations did not create,
   * applied migrations whose file is gone.
   */
  readonly warnings: string[];
}

export interface NewMigration {
  /** The file written; undefined when the queue's migrations already give the handler's schema. */
  readonly path: string | undefined;
  readonly statements: string[];
  /** True for the queue's first migration, which creates its tables (and also applies where they exist). */
  readonly baseline: boolean;
  readonly warnings: string[];
}

/**
 * Applies the queues' pending migrations, then creates the missing tables of queues that have none. The
 * tables of a queue with migrations are the migrations' to create: those missing are warned about.
 * Baton's own migrations are applied by whoever opens the store (openStorage), before this.
 */
export async function updateSchema(
  store: Store,
  config: ResolvedConfig,
  handlers: readonly Handler[],
  onApplied?: MigrationProgress,
): Promise<SchemaUpdate> {
  const queues = Object.values(config.queues);
  const perQueue = await Promise.all(queues.map(queueMigrations));
  const migrated = await applyMigrations(store, perQueue.flat(), onApplied);
  const hasMigrations = (handler: Handler): boolean =>
    (perQueue[queues.findIndex((queue) => queue.name === handler.queue)]?.length ?? 0) > 0;
  const created = await createMissingTables(
    store,
    handlers.filter((handler) => !hasMigrations(handler)),
  );
  const warnings: string[] = [];
  for (const handler of handlers.filter(hasMigrations)) {
    const missing = await missingTables(store, [handler]);
    if (missing.length === 0) continue;
    warnings.push(
      `queue "${handler.queue}": the database lacks ${missing.join(', ')} of its handler's schema; the tables of ` +
        'a queue with migrations come from its migrations only (`run` does not create them): when they do not ' +
        `create it, run \`baton make-migration ${handler.queue}\``,
    );
  }
  const recorded = await appliedMigrations(store);
  queues.forEach((queue, index) => {
    const files = new Set(perQueue[index]?.map((migration) => migration.id));
    for (const id of recorded.filter((id) => id.startsWith(`${queue.name}/`) && !files.has(id))) {
      warnings.push(
        `queue "${queue.name}": migration ${id} is recorded as applied, but its file is not in ${queue.migrations ?? 'its migrations folder'}`,
      );
    }
  });
  return { migrated, created, warnings };
}

/**
 * Whether the store's schema is current for this config, looking only (a standby in recovery may be asked):
 * Baton's newest migration and every queue migration recorded, and no table of a handler without
 * migrations missing. When it is, updateSchema would change nothing (it still takes the schema lock).
 */
export async function schemaIsCurrent(
  store: Store,
  config: ResolvedConfig,
  handlers: readonly Handler[],
): Promise<boolean> {
  const latest = (await builtinMigrations()).at(-1)?.id ?? '';
  if ((await missingSchema(store, latest)) !== undefined) return false;
  const queues = Object.values(config.queues);
  const perQueue = await Promise.all(queues.map(queueMigrations));
  if ((await pendingMigrations(store, perQueue.flat())).length > 0) return false;
  const withoutMigrations = handlers.filter(
    (handler) => (perQueue[queues.findIndex((queue) => queue.name === handler.queue)]?.length ?? 0) === 0,
  );
  return (await missingTables(store, withoutMigrations)).length === 0;
}

/**
 * Writes the next migration of `queue` from the difference between its handler's schema and what the
 * queue's migrations give, replayed into a scratch database; the first one (the baseline) creates the
 * tables, in a form that also applies where they exist already, and brings tables that `run` created
 * before (read through `reader`: the store, or the owner node's `sql`) to the schema. When the migrations
 * cannot be replayed, the schema is diffed against the store, which must have them all applied.
 */
export async function makeMigration(
  reader: SqlReader,
  config: ResolvedConfig,
  handler: Handler,
  message: string,
): Promise<NewMigration> {
  const queue = config.queues[handler.queue];
  if (!queue) throw new UnknownQueueError(handler.queue, Object.keys(config.queues));
  const migrations = await queueMigrations(queue);
  const baseline = migrations.length === 0;
  const warnings: string[] = [];
  let statements: string[];
  const replayed = await replayedSchemaDiff(handler, migrations);
  if ('statements' in replayed) {
    statements = replayed.statements;
  } else {
    warnings.push(
      `the migrations of queue "${queue.name}" cannot be replayed in a scratch database (${replayed.failure}): ` +
        'the schema is compared with the database instead, so it must be one where they all are applied',
    );
    const pending = await pendingMigrations(reader, [...(await builtinMigrations()), ...migrations]);
    if (pending.length > 0) throw new PendingMigrationsError(pending);
    statements = baseline ? await createStatements(handler) : await schemaDiff(reader, handler);
  }
  if (statements.length === 0) return { path: undefined, statements, baseline, warnings };
  const notes: string[] = [];
  if (baseline) {
    // Tables that `run` created before the queue had migrations: what they lack comes after the baseline.
    const catchUp = (await schemaDiff(reader, handler)).filter(
      (statement) => !statements.includes(statement),
    );
    notes.push(
      'The baseline: it creates the tables of the queue, and does nothing to those that exist already',
      '(IF NOT EXISTS; a duplicate constraint or type is ignored).',
    );
    if (catchUp.length > 0) {
      notes.push(
        'Its last statements bring tables created before (by `baton run`) to the schema; elsewhere they do nothing.',
      );
    }
    statements = [...statements, ...catchUp].map(idempotent);
  }
  return { path: await writeMigration(queue, message, statements, notes), statements, baseline, warnings };
}
