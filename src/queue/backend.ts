// The QueueBackend port: a named channel of opaque byte records with claims, acknowledgement inside the
// sink transaction, attempts and an error queue per queue (`errors-<queue>`). It does not run handlers,
// choose batch sizes or decide back-off: the queue runner does. Adapters own their connections.
import type { QueueConfig } from '../config/types.js';
import type { Tx } from '../store/store.js';
import type { RateLimiter } from './rate-limit.js';
import type { RecordOptions } from './record-options.js';

export interface ClaimedRecord {
  /** Adapter-assigned id, unique within the queue. */
  readonly id: string;
  /** Index of the record in its batch's `records`, set at claim (what a batch ledger records). */
  readonly position: number;
  readonly payload: Buffer;
  /** Failed runs so far (0 on the first delivery). */
  readonly attempts: number;
  readonly enqueuedAt: Date;
  /** The record's key (given at publish, or computed by the handler module's key()); undefined: none. */
  readonly key?: string | undefined;
  /**
   * True when the record was claimed by a consumer that died (its claim was recovered): it may be the record
   * that killed its node, so the runner runs it alone. Only adapters that can tell set it.
   */
  readonly orphaned?: boolean;
}

export interface ClaimedBatch {
  readonly id: string;
  readonly queue: string;
  readonly consumer: string;
  readonly records: readonly ClaimedRecord[];
}

export interface RecordFailure {
  readonly record: ClaimedRecord;
  readonly error: string;
  /** When to deliver the record again; undefined sends it to the error queue. */
  readonly retryAt: Date | undefined;
}

export interface QueueStats {
  /** Records waiting (including delayed ones and those waiting out a retry back-off). */
  readonly depth: number;
  /**
   * Of `depth`, records not due yet: published with a delay or a time still ahead, or waiting out a retry
   * back-off. A store queue counts them up to DELAYED_COUNT_CAP (then `delayedCapped`).
   */
  readonly delayed: number;
  /** True when there are more delayed records than `delayed` says (it stopped counting at its cap). */
  readonly delayedCapped?: boolean;
  /** Records claimed by a consumer and not yet acknowledged. */
  readonly inFlight: number;
  /** Records in the error queue. */
  readonly errors: number;
  /** Records dropped as duplicates of an idempotency id seen within the dedup window (since counting began). */
  readonly deduplicated?: number;
}

/** A queue as listed by `baton queues` and GET /v1/queues: the backend's figures and the nodes' counters. */
export interface QueueInfo extends QueueStats {
  readonly name: string;
  readonly backend: QueueBackend['kind'];
  /** Records processed by the nodes running, since they started; undefined when none answers. */
  readonly processed: number | undefined;
  /** Failed attempts on the nodes running, since they started; undefined when none answers. */
  readonly failed: number | undefined;
}

export interface ErrorRecord {
  readonly id: string;
  readonly queue: string;
  readonly payload: Buffer;
  readonly attempts: number;
  readonly error: string;
  readonly failedAt: Date;
  readonly enqueuedAt: Date;
}

/** What a backend is told of a queue's config (see configure()). */
export interface QueueSettings {
  /** "key": each key's records in publish order, one batch at a time per key, claims round-robin across keys. */
  readonly ordering: 'none' | 'key';
  /** How long an idempotency id is remembered. */
  readonly dedupWindowMs: number;
  /**
   * The handler module's key(), for records that reach the queue without a key (pushed raw to a Redis list);
   * known only where the handler is loaded (a node). Throws for a record it cannot key.
   */
  readonly keyOf?: ((record: Buffer) => string | undefined) | undefined;
  /** Batches that may hold records of one key at once (ordering = "key"); undefined: 1. */
  readonly keyConcurrency?: number | undefined;
  /** Records per second one key may run, at most, across every consumer (ordering = "key"); undefined: no limit. */
  readonly keyRateLimit?: number | undefined;
}

/** A queue never configured: no ordering, ids remembered for a day. */
export const DEFAULT_QUEUE_SETTINGS: QueueSettings = { ordering: 'none', dedupWindowMs: 86_400_000 };

/** What a backend is told of `queue`, with the handler's key() where the handler is loaded. */
export function queueSettings(
  queue: Pick<QueueConfig, 'ordering' | 'dedupWindowMs' | 'keyConcurrency' | 'keyRateLimit'>,
  keyOf?: QueueSettings['keyOf'],
): QueueSettings {
  return {
    ordering: queue.ordering,
    dedupWindowMs: queue.dedupWindowMs,
    keyConcurrency: queue.keyConcurrency,
    keyRateLimit: queue.keyRateLimit,
    ...(keyOf ? { keyOf } : {}),
  };
}

export interface QueueBackend {
  readonly kind: 'store' | 'redis' | 'postgres';
  /**
   * Tells the backend a queue's settings, before it publishes or claims for it: from the config when the
   * backends open, and again with the handler's key() by a node that consumes the queue. A queue never
   * configured has ordering "none" and the default dedup window. Synchronous: nothing is written.
   */
  configure(queue: string, settings: QueueSettings): void;
  /** Connects and checks the backend; BackendUnavailableError when it does not answer within the timeout. */
  start(options: { startupTimeoutMs: number }): Promise<void>;
  /** True when the backend answers now (readiness). */
  ready(): Promise<boolean>;
  /**
   * What keeps the backend from serving although it answers, one sentence each naming the thing to fix (e.g.
   * a Redis key of the wrong type); empty when nothing does. Absent: nothing of the kind can happen.
   */
  problems?(): Promise<string[]>;
  /**
   * Appends records to the queue; resolves once they are durable, all of them or none. Returns how many
   * were accepted (stored, or dropped as duplicates of a record with the same idempotency id). A record
   * with a delay (`options.delays`, checked by checkDelay) is not claimed before its time; its key orders
   * it among the records of its key when the queue has ordering = "key".
   */
  publish(queue: string, records: readonly Buffer[], options?: RecordOptions): Promise<number>;
  /** Claims up to `max` ready records for `consumer`, oldest first; undefined when none is ready. */
  claim(queue: string, consumer: string, max: number): Promise<ClaimedBatch | undefined>;
  /**
   * Inside the sink transaction: once `tx` commits, these records are never delivered again. Throws
   * ClaimLostError when some of them are no longer claimed by the batch's consumer (another node
   * recovered them), so that the transaction rolls back instead of applying them twice.
   */
  acknowledge(tx: Tx, batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<void>;
  /**
   * After the batch's transaction committed: settles the batch. For each failure, counts one attempt and
   * schedules the record's retry or moves it to the error queue; then frees what the claim held outside
   * the sink (e.g. a Redis processing key), possibly later (with the consumer's next claim). Called once per
   * processed batch, failures or not. Resolves to the records it moved to the error queue: record id → the
   * id that listErrors lists (a failure missing there was retried, or recovered before it completed).
   */
  complete(batch: ClaimedBatch, failures: readonly RecordFailure[]): Promise<ReadonlyMap<string, string>>;
  /** Gives claimed records back without counting an attempt (they did not run, or their run was undone). */
  release(batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<void>;
  /** Declares `consumer` alive (and keeps it so, e.g. by heartbeats) until it is unregistered. */
  registerConsumer(consumer: string, node: string): Promise<void>;
  unregisterConsumer(consumer: string): Promise<void>;
  /**
   * Returns the claims of consumers that are no longer alive, counting one attempt for each record (it may
   * be the record that killed its consumer). Records out of attempts go to the error queue. Returns how many.
   */
  recoverClaims(queue: string, options: { maxAttempts: number }): Promise<number>;
  /**
   * Present when records may be processed inside the producer's own transaction (inline ingest): the store
   * queue of a store that one process owns. Absent elsewhere; callers then publish.
   */
  readonly inline?: InlineIngest | undefined;
  /** True when other processes may consume the queue too: their dead consumers' claims are recovered. */
  readonly shared: boolean;
  /** The queues' rate limits (`rate_limit`), shared by every consumer of the backend. */
  readonly rates: RateLimiter;
  /** Resolves when records may have become ready, after `timeoutMs`, or when `signal` aborts. */
  waitForRecords(queue: string, timeoutMs: number, signal: AbortSignal): Promise<void>;
  stats(queue: string): Promise<QueueStats>;
  /** A page of the error queue in id order (ids compared as numbers), by index: see ErrorPage. */
  listErrors(queue: string, options: ErrorPage): Promise<ErrorRecord[]>;
  /** Moves error records back to the queue with their attempts reset. `ids` picks some; else the oldest `limit`. */
  replayErrors(queue: string, options: { ids?: readonly string[]; limit: number }): Promise<number>;
  dropErrors(queue: string, ids: readonly string[]): Promise<number>;
  close(): Promise<void>;
}

/**
 * Inline ingest: a request's records handled in the request. They are first committed as one claim row of
 * the queue holding the whole request (one short commit, one row whatever the number of records), so that
 * a record that kills the process is counted: recovery turns an orphaned claim row into the request's
 * records, one attempt each, as for a claimed batch. Then the handler runs and settles the claim in one
 * transaction of the sink.
 */
export interface InlineIngest {
  /**
   * Stores `records` as one claim of `consumer` in `queue`, committed. When ready records wait (new ones
   * must not overtake them) they are stored unclaimed instead, as publish() does, and undefined is returned.
   */
  claimInline(queue: string, consumer: string, records: readonly Buffer[]): Promise<InlineClaim | undefined>;
  /** Runs `fn` in a transaction of the sink that holds the queue. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /**
   * Inside that transaction: removes the claim (ClaimLostError when it is gone); `failures` (by position)
   * go to the queue to be retried or to the error queue, `requeue` to the queue unclaimed, uncounted.
   * Resolves to the positions moved to the error queue → their error queue ids.
   */
  settleInline(
    tx: Tx,
    claim: InlineClaim,
    outcome: { failures?: readonly InlineFailure[]; requeue?: boolean },
  ): Promise<ReadonlyMap<number, string>>;
  /** After the commit: wakes the consumers of `queue` (records were added outside `publish`). */
  notify(queue: string): void;
}

/** A request's records claimed for inline ingest: one row of the queue. */
export interface InlineClaim {
  /** The claim row's id. */
  readonly id: string;
  readonly queue: string;
  readonly consumer: string;
  readonly records: readonly Buffer[];
}

/** A record of an inline claim whose run failed. */
export interface InlineFailure {
  readonly position: number;
  readonly error: string;
  /** When to run it again; undefined: no attempts left, straight to the error queue. */
  readonly retryAt: Date | undefined;
}

/** Why a record whose claim was recovered from a dead consumer failed (its error queue entry says so). */
export const RECOVERED_REASON =
  'its node stopped while processing it: crashed, killed, or ended by the watchdog (the claim was recovered)';

/** Display name of a queue's error queue, as Azafea names it. */
export function errorQueueName(queue: string): string {
  return `errors-${queue}`;
}

/**
 * Which page of an error queue to list. Always returned oldest first (ascending ids, compared as numbers).
 * With neither cursor: the oldest `limit`. `afterId`: the oldest `limit` above it (the next page).
 * `beforeId`: the newest `limit` below it (the page before), and above `afterId` when both are given.
 */
export interface ErrorPage {
  readonly limit: number;
  readonly afterId?: string;
  readonly beforeId?: string;
}
