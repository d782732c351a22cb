// Queues kept in a PostgreSQL database of their own (`backend = "postgres"` with a `url`), while handlers
// write to the sink. The two databases cannot commit together, so delivery is at-least-once and the batch
// ledger in the sink makes the effect exactly-once, as for Redis queues: the handler's transaction records
// the positions it acknowledged, and the rows are deleted from the queue database only after that commit.
// Records, claims, heartbeats, wake-ups and error queues are StoreQueueBackend's, run over the queue database.
import { BackendUnavailableError, describeError, NotRunningError } from '../errors.js';
import type { Logger } from '../log.js';
import { applyMigrations, builtinMigrations } from '../store/migrate.js';
import { openPostgresStore } from '../store/postgres.js';
import type { Store, Tx } from '../store/store.js';
import type {
  ClaimedBatch,
  ClaimedRecord,
  ErrorPage,
  ErrorRecord,
  QueueBackend,
  QueueStats,
  RecordFailure,
  QueueSettings,
} from './backend.js';
import type { Acked } from './batch-ledger.js';
import { BatchLedger, batchPositions, isAcked } from './batch-ledger.js';
import type { RateLimiter } from './rate-limit.js';
import type { RecordOptions } from './record-options.js';
import { StoreQueueBackend } from './store-queue.js';

export interface PostgresQueueOptions {
  /** postgres:// URL of the queue database (Baton's migrations are applied there at start). */
  readonly url: string;
  /** The sink: acknowledgements are rows of its baton_batch_ledger table. */
  readonly store: Store;
  readonly log: Logger;
  /** Connections to the queue database, at most. */
  readonly poolSize?: number;
  /** Milliseconds a statement may run in the queue database; 0 means no limit. */
  readonly statementTimeoutMs?: number;
  readonly queryTimeoutMs?: number;
  readonly applicationName?: string;
}

const DEFAULT_POOL_SIZE = 10;
const DEFAULT_STARTUP_TIMEOUT_MS = 30_000;
/** Ledger rows past their retention are swept at most this often per queue. */
const LEDGER_SWEEP_MS = 60_000;

interface Opened {
  readonly store: Store;
  readonly queues: StoreQueueBackend;
}

export class PostgresQueueBackend implements QueueBackend {
  readonly kind = 'postgres';
  readonly shared = true;
  readonly #options: PostgresQueueOptions;
  readonly #ledger: BatchLedger;
  readonly #ledgerSweptAt = new Map<string, number>();
  #opened: Opened | undefined;
  /** Queue settings told before the queue database opened, handed to its queues when it does. */
  readonly #settings = new Map<string, QueueSettings>();
  #starting: Promise<void> | undefined;
  #closed = false;

  constructor(options: PostgresQueueOptions) {
    this.#options = options;
    this.#ledger = new BatchLedger(options.store);
  }

  /** Opens the queue database (BackendUnavailableError past the timeout) and applies Baton's migrations. */
  start(options: { startupTimeoutMs?: number } = {}): Promise<void> {
    return (this.#starting ??= this.#open(options.startupTimeoutMs ?? DEFAULT_STARTUP_TIMEOUT_MS));
  }

  async #open(startupTimeoutMs: number): Promise<void> {
    const { url, log } = this.#options;
    const config = {
      kind: 'postgres',
      url,
      // Baton's tables in the queue database live in the schema of its tables in the sink.
      schema: this.#options.store.schema,
      poolSize: this.#options.poolSize ?? DEFAULT_POOL_SIZE,
      statementTimeoutMs: this.#options.statementTimeoutMs ?? 0,
      ...(this.#options.queryTimeoutMs === undefined ? {} : { queryTimeoutMs: this.#options.queryTimeoutMs }),
    } as const;
    const applicationName = this.#options.applicationName ?? 'baton:queue';
    const store = await openPostgresStore(config, { log, startupTimeoutMs, applicationName }).catch(
      (error: unknown) => {
        // Say which database: the message of the store's own error names the store.
        throw new BackendUnavailableError('postgres queue', 'cannot open the queue database', {
          cause: error,
        });
      },
    );
    try {
      await applyMigrations(store, await builtinMigrations(), undefined, { log });
      const queues = new StoreQueueBackend(store, log, { ledger: this.#ledger });
      for (const [queue, settings] of this.#settings) queues.configure(queue, settings);
      await queues.start();
      this.#opened = { store, queues };
    } catch (error) {
      await store.close().catch(() => undefined);
      throw error;
    }
  }

  async ready(): Promise<boolean> {
    return this.#opened !== undefined && !this.#closed && (await this.#opened.store.ping());
  }

  /** The queue database's rate limits (its queues' own). */
  readonly rates: RateLimiter = {
    reserve: (queue, want, perSecond) => this.#queues().rates.reserve(queue, want, perSecond),
    refund: (queue, count, perSecond) => this.#queues().rates.refund(queue, count, perSecond),
  };

  configure(queue: string, settings: QueueSettings): void {
    this.#settings.set(queue, settings);
    this.#opened?.queues.configure(queue, settings);
  }

  publish(queue: string, records: readonly Buffer[], options?: RecordOptions): Promise<number> {
    return this.#queues().publish(queue, records, options);
  }

  registerConsumer(consumer: string, node: string): Promise<void> {
    return this.#queues().registerConsumer(consumer, node);
  }

  unregisterConsumer(consumer: string): Promise<void> {
    return this.#queues().unregisterConsumer(consumer);
  }

  /** Claims in id order and writes the batch id on the rows, so that recovery can find the ledger row. */
  claim(queue: string, consumer: string, max: number): Promise<ClaimedBatch | undefined> {
    return this.#queues().claim(queue, consumer, max);
  }

  /** Inside the sink transaction: the positions of `records` in their batch go to the ledger. */
  async acknowledge(tx: Tx, batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<void> {
    await this.#ledger.acknowledge(tx, batch, batchPositions(batch, records));
  }

  /** After the commit: deletes the acknowledged rows and counts the failures, in one transaction. */
  complete(batch: ClaimedBatch, failures: readonly RecordFailure[]): Promise<ReadonlyMap<string, string>> {
    return this.#settle(batch, failures);
  }

  /**
   * Gives back every record of the batch that the ledger does not show committed, and deletes those it does.
   * The whole batch, not only `records` (the runner gives back whole batches): a batch's rows leave it
   * together, since recovery counts positions over the rows the batch still holds.
   */
  async release(batch: ClaimedBatch, _records: readonly ClaimedRecord[]): Promise<void> {
    await this.#settle(batch, []);
  }

  /** Resolves to the failures moved to the error queue (record id → error record id), as complete() does. */
  async #settle(
    batch: ClaimedBatch,
    failures: readonly RecordFailure[],
  ): Promise<ReadonlyMap<string, string>> {
    const queues = this.#queues();
    let acked: Acked;
    try {
      acked = await this.#ledger.acked(batch.id);
    } catch (error) {
      // The batch is no longer this process's to settle: an empty settlement forgets it, so that recovery
      // gives its claims back (consulting the ledger) once the sink answers again.
      await queues.settle(batch, {});
      throw error;
    }
    if (acked === 'all') return queues.settle(batch, { done: batch.records });
    const committed = new Set(acked);
    const failed = new Set(failures.map((failure) => failure.record.position));
    const done: ClaimedRecord[] = [];
    const released: ClaimedRecord[] = [];
    for (const record of batch.records) {
      if (committed.has(record.position)) done.push(record);
      else if (!failed.has(record.position)) released.push(record);
    }
    const unacked = failures.filter((failure) => !isAcked(acked, failure.record.position));
    return queues.settle(batch, { done, failures: unacked, released });
  }

  /**
   * Fences each batch of a dead consumer in the sink's ledger first (a late acknowledgement then fails),
   * then, in the queue database, deletes what the ledger shows committed and counts one attempt for the rest.
   */
  async recoverClaims(queue: string, options: { maxAttempts: number }): Promise<number> {
    const queues = this.#queues();
    await this.#sweepLedger(queue, queues);
    return queues.recoverClaims(queue, options);
  }

  waitForRecords(queue: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
    return this.#queues().waitForRecords(queue, timeoutMs, signal);
  }

  async stats(queue: string): Promise<QueueStats> {
    const queues = this.#queues();
    const [stats, batches] = await Promise.all([queues.stats(queue), queues.claimedBatches(queue)]);
    // Acknowledged records keep their claimed rows until the batch completes; they are done.
    const acked = await this.#ledger.committedCount(batches);
    return { ...stats, inFlight: Math.max(0, stats.inFlight - acked) };
  }

  listErrors(queue: string, options: ErrorPage): Promise<ErrorRecord[]> {
    return this.#queues().listErrors(queue, options);
  }

  replayErrors(queue: string, options: { ids?: readonly string[]; limit: number }): Promise<number> {
    return this.#queues().replayErrors(queue, options);
  }

  dropErrors(queue: string, ids: readonly string[]): Promise<number> {
    return this.#queues().dropErrors(queue, ids);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#starting?.catch(() => undefined);
    const opened = this.#opened;
    if (!opened) return;
    await opened.queues.close().catch((error: unknown) => {
      this.#options.log.warn(
        { err: describeError(error) },
        'postgres queue: could not unregister its consumers',
      );
    });
    await opened.store.close();
  }

  #queues(): StoreQueueBackend {
    if (this.#closed) throw new NotRunningError('postgres queue: the backend is closed');
    if (!this.#opened)
      throw new NotRunningError('postgres queue: start() must finish before the backend is used');
    return this.#opened.queues;
  }

  async #sweepLedger(queue: string, queues: StoreQueueBackend): Promise<void> {
    if (Date.now() - (this.#ledgerSweptAt.get(queue) ?? 0) < LEDGER_SWEEP_MS) return;
    this.#ledgerSweptAt.set(queue, Date.now());
    // Rows of batches still claimed are kept whatever their age: they fence a consumer that may still commit.
    await this.#ledger.sweep(queue, [...(await queues.claimedBatches(queue)).keys()]);
  }
}
