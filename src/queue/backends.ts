// The backends of a config, opened for a node or a CLI command: the store (with the owner lock for the
// embedded store) with Baton's migrations applied, the store-backed queue backend, the Redis queue backend
// when a queue uses it, and one PostgreSQL queue backend per queue database. Each queue is routed to its
// backend. Closes in reverse order. The PostgreSQL and Redis drivers are imported only when the config uses
// them, so that a command on the embedded store does not load them.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import type { ResolvedConfig } from '../config/types.js';
import { BackendUnavailableError, StoreLockedError, UnknownQueueError } from '../errors.js';
import type { Logger } from '../log.js';
import type { QueueBackend } from './backend.js';
import { queueSettings } from './backend.js';
import type { PostgresQueueBackend } from './postgres-queue.js';
import type { RedisQueueBackend } from './redis.js';
import { StoreQueueBackend } from './store-queue.js';
import type { LockOwner, OwnerKind, StoreLock } from '../store/lock.js';
import { sleep } from '../util/sleep.js';
import { acquireStoreLock } from '../store/lock.js';
import { applyMigrations, builtinMigrations, missingSchema } from '../store/migrate.js';
import { isReadOnlyError, readOnlyReason, STANDBY_REASON } from '../store/read-only.js';
import { openPgliteStore } from '../store/pglite.js';
import type { Store } from '../store/store.js';

export interface Backends {
  readonly store: Store;
  /** Every queue backend in use, each once. */
  readonly backends: readonly QueueBackend[];
  /** The owner lock of the embedded store; undefined on a server store, which any number may share. */
  readonly lock: StoreLock | undefined;
  /** Migration ids applied while opening. */
  readonly migrated: readonly string[];
  /**
   * Why the store took no writes when it was opened (a standby in recovery), with `deferWrites`: Baton's
   * migrations and the wake-up LISTEN then wait for completeOpening(). Undefined for a store that took them.
   */
  readonly readOnly: string | undefined;
  /**
   * Once the store takes writes: applies Baton's migrations and starts the wake-up LISTEN that opening
   * deferred; returns the migration ids applied. `migrate: false` when the caller found the schema current
   * (schemaIsCurrent). Does nothing for a store opened writable. Call it once at a time.
   */
  completeOpening(options?: { migrate?: boolean }): Promise<string[]>;
  /** The backend of a configured queue (UnknownQueueError otherwise). */
  backendFor(queue: string): QueueBackend;
  /** True when the store and every backend answer (what they report as problems is `problems()`). */
  ready(): Promise<boolean>;
  /** What the backends report keeps them from serving (see QueueBackend.problems). */
  problems(): Promise<string[]>;
  close(): Promise<void>;
}

export interface OpenBackendsOptions {
  /** false (CLI commands): no wake-up listening, since nothing consumes through this opening. Default true. */
  readonly consume?: boolean;
  /**
   * A store that takes no writes (a standby in recovery) is opened all the same, its migrations and LISTEN
   * deferred (see Backends.readOnly). Without it, such a store is refused with a clear error unless it holds
   * Baton's schema already (reads then work; writes fail with the database's reason).
   */
  readonly deferWrites?: boolean;
}

export async function openBackends(
  config: ResolvedConfig,
  log: Logger,
  options: OpenBackendsOptions = {},
): Promise<Backends> {
  const consume = options.consume ?? true;
  const deferWrites = options.deferWrites ?? false;
  const releasers: Array<() => Promise<void>> = [];
  const release = async (): Promise<void> => {
    // Reverse order of opening; keep going past failures.
    for (const step of releasers.reverse()) await step().catch(() => undefined);
  };
  try {
    if (config.store.kind === 'embedded') {
      const lock = await takeLock(config, consume ? 'node' : 'command', log);
      releasers.push(() => lock.release());
      return await assemble(
        config,
        log,
        await openEmbeddedStore(config.store.path, config.store.schema, log, consume),
        lock,
        releasers,
        release,
        { consume, deferWrites },
      );
    }
    const { openPostgresStore } = await import('../store/postgres.js');
    const store = await openPostgresStore(config.store, {
      log,
      startupTimeoutMs: config.node.startupTimeoutMs,
      // A command's connections are told from its node's (pg_stat_activity, the bound in docs/config.md).
      applicationName: `baton:${config.node.name}${consume ? '' : ':command'}`,
    });
    return await assemble(config, log, store, undefined, releasers, release, { consume, deferWrites });
  } catch (error) {
    await release();
    throw error;
  }
}

/**
 * Opens PGlite, saying so first: it takes a moment (several seconds on a first start, which creates the
 * database), during which a node would otherwise look stuck. A command says it at debug level only.
 */
async function openEmbeddedStore(path: string, schema: string, log: Logger, node: boolean): Promise<Store> {
  const say = (fields: object, message: string): void =>
    node ? log.info(fields, message) : log.debug(fields, message);
  const started = performance.now();
  if (existsSync(join(path, 'PG_VERSION'))) say({ path }, `opening the embedded store in ${path}`);
  else say({ path }, `creating the embedded store in ${path} (a first start: may take several seconds)`);
  const store = await openPgliteStore(path, {
    schema,
    log,
    ...(node ? {} : { sharedBuffers: COMMAND_SHARED_BUFFERS }),
  });
  const ms = Math.round(performance.now() - started);
  say({ path, ms }, `embedded store open (${ms} ms)`);
  return store;
}

/**
 * shared_buffers of the embedded store opened by a command: a command reads or writes little, and PGlite
 * touches every buffer when it starts (128MB by default, which a node keeps).
 */
const COMMAND_SHARED_BUFFERS = '16MB';

async function assemble(
  config: ResolvedConfig,
  log: Logger,
  store: Store,
  lock: StoreLock | undefined,
  releasers: Array<() => Promise<void>>,
  release: () => Promise<void>,
  options: { consume: boolean; deferWrites: boolean },
): Promise<Backends> {
  const { consume } = options;
  releasers.push(() => store.close());
  const readOnly = await readOnlyStore(store, options.deferWrites);
  const migrate = async (): Promise<string[]> => {
    try {
      return await applyMigrations(store, await builtinMigrations(), undefined, { log });
    } catch (error) {
      // Demoted between the look and the migration: said as what it is, not as the refused statement.
      if (isReadOnlyError(error)) {
        throw new BackendUnavailableError('store', 'takes no writes now (read-only)', { cause: error });
      }
      throw error;
    }
  };
  const migrated = readOnly === undefined ? await migrate() : [];
  const storeQueues = new StoreQueueBackend(store, log);
  releasers.push(() => storeQueues.close());
  // LISTEN is refused during recovery: a store that takes no writes starts it in completeOpening().
  if (consume && readOnly === undefined) await storeQueues.start();
  let deferred = readOnly !== undefined;

  const redisQueues = Object.values(config.queues).filter((queue) => queue.backend === 'redis');
  let redis: RedisQueueBackend | undefined;
  if (redisQueues.length > 0) {
    const { RedisQueueBackend } = await import('./redis.js');
    redis = new RedisQueueBackend({
      url: config.redis.url,
      store,
      log,
      keys: Object.fromEntries(redisQueues.map((queue) => [queue.name, queue.key])),
    });
    const opened = redis;
    releasers.push(() => opened.close());
    // The persistence advice is for whoever runs the node, not for every command that opens the backends.
    await redis.start({ startupTimeoutMs: config.node.startupTimeoutMs, checkPersistence: consume });
  }
  // One backend per queue database, however many queues share it: each owns a pool and a LISTEN connection.
  const foreign = new Map<string, PostgresQueueBackend>();
  for (const queue of Object.values(config.queues)) {
    if (queue.backend !== 'postgres' || queue.url === undefined || foreign.has(queue.url)) continue;
    const { PostgresQueueBackend } = await import('./postgres-queue.js');
    const backend = new PostgresQueueBackend({
      url: queue.url,
      store,
      log,
      // A server store's pool settings apply to the queue databases too; the embedded store has none.
      ...(config.store.kind === 'postgres'
        ? {
            poolSize: config.store.poolSize,
            statementTimeoutMs: config.store.statementTimeoutMs,
            queryTimeoutMs: config.store.queryTimeoutMs,
          }
        : {}),
      applicationName: `baton:${config.node.name}:queue`,
    });
    foreign.set(queue.url, backend);
    releasers.push(() => backend.close());
    await backend.start({ startupTimeoutMs: config.node.startupTimeoutMs });
  }
  const backends: QueueBackend[] = [storeQueues, ...(redis ? [redis] : []), ...foreign.values()];
  const backendFor = (queue: string): QueueBackend => {
    const queueConfig = config.queues[queue];
    if (!queueConfig) throw new UnknownQueueError(queue, Object.keys(config.queues));
    if (queueConfig.backend === 'redis' && redis) return redis;
    const queueDatabase = queueConfig.url === undefined ? undefined : foreign.get(queueConfig.url);
    if (queueConfig.backend === 'postgres' && queueDatabase) return queueDatabase;
    return storeQueues;
  };
  for (const queue of Object.values(config.queues)) {
    backendFor(queue.name).configure(queue.name, queueSettings(queue));
  }
  const problems = async (): Promise<string[]> =>
    (await Promise.all(backends.map((backend) => backend.problems?.() ?? Promise.resolve([])))).flat();

  return {
    store,
    backends,
    lock,
    migrated,
    readOnly,
    async completeOpening(completing: { migrate?: boolean } = {}): Promise<string[]> {
      if (!deferred) return [];
      const applied = (completing.migrate ?? true) ? await migrate() : [];
      if (consume) await storeQueues.start();
      deferred = false;
      return applied;
    },
    backendFor,
    async ready(): Promise<boolean> {
      const answers = await Promise.all([store.ping(), ...backends.map((backend) => backend.ready())]);
      return answers.every(Boolean);
    },
    problems,
    close: release,
  };
}

/**
 * Why the store takes no writes, when it takes none and may be opened so. Refused (BackendUnavailableError)
 * without `deferWrites` when the store lacks Baton's schema or a migration of it, since nothing can apply them.
 */
async function readOnlyStore(store: Store, deferWrites: boolean): Promise<string | undefined> {
  const reason = await readOnlyReason(store);
  if (reason === undefined || deferWrites) return reason;
  const latest = (await builtinMigrations()).at(-1)?.id ?? '';
  const missing = await missingSchema(store, latest);
  if (missing === undefined) return reason;
  // The reason says what the node would do (wait); a command cannot wait, so it names the way out.
  const readOnly =
    reason === STANDBY_REASON ? 'the store is a standby in recovery' : 'the store is read-only';
  throw new BackendUnavailableError(
    'store',
    `${readOnly} and lacks Baton's schema or its newest migration, which cannot be applied there: ` +
      'run `baton migrate` against the primary',
  );
}

/**
 * Takes the embedded store's owner lock. A node that finds a CLI command holding it (a command opens the
 * store for a moment when no node runs) waits for it, up to the startup timeout; any other owner is an error.
 */
async function takeLock(config: ResolvedConfig, kind: OwnerKind, log: Logger): Promise<StoreLock> {
  const deadline = Date.now() + config.node.startupTimeoutMs;
  let told = false;
  for (;;) {
    const attempt = await acquireStoreLock(config.node.dataDir, config.node.name, kind).catch(
      (error: unknown) => {
        throw new BackendUnavailableError('store', `cannot use the data folder ${config.node.dataDir}`, {
          cause: error,
        });
      },
    );
    if (attempt.acquired) return attempt.lock;
    if (kind !== 'node' || attempt.owner.kind !== 'command' || Date.now() >= deadline) {
      throw lockedError(config, attempt.owner);
    }
    if (!told) {
      told = true;
      log.info(
        { pid: attempt.owner.pid },
        `waiting for a baton command (pid ${attempt.owner.pid}) to release the embedded store`,
      );
    }
    await sleep(LOCK_RETRY_MS);
  }
}

/** How often a starting node looks again at a store lock held by a CLI command. */
const LOCK_RETRY_MS = 100;

function lockedError(config: ResolvedConfig, owner: LockOwner): StoreLockedError {
  const where = owner.address
    ? ` at ${owner.address}`
    : owner.kind === 'command'
      ? ' (a baton command that did not finish in time)'
      : ' (its HTTP API is not listening)';
  return new StoreLockedError(
    `the embedded store in ${config.node.dataDir} is in use by ${owner.node ?? 'another node'} (pid ${owner.pid})${where}`,
    owner.pid,
  );
}
