// Queues kept in the sink database itself (`backend = "store"`): a record is a row of baton_queue_records,
// claimed with FOR UPDATE SKIP LOCKED and deleted in the handler's own transaction, so its effect and its
// acknowledgement commit together. Runs the same SQL on PGlite and on a PostgreSQL server.
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';

import { sql } from 'drizzle-orm';

import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Row, Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';
import { ClaimLostError } from './backend.js';
import type {
  ClaimedBatch,
  ClaimedRecord,
  ErrorRecord,
  QueueBackend,
  QueueStats,
  RecordFailure,
} from './backend.js';

/** A record that failed inside an ingest transaction and goes to the queue to be retried there. */
export interface InlineFailure {
  readonly payload: Buffer;
  readonly error: string;
  /** undefined: no attempts left, straight to the error queue. */
  readonly retryAt: Date | undefined;
}

/** Channel of the NOTIFY that wakes the consumers of other nodes; the payload is the queue name. */
export const WAKEUP_CHANNEL = 'baton_queue_records';
/** Event on the local emitter that wakes every queue (after a LISTEN reconnect, notifications may be lost). */
const ALL_QUEUES = Symbol('all queues');
/** A consumer not seen for this long is dead, and its claims are recovered. */
export const CONSUMER_TIMEOUT_MS = 3_000;
const HEARTBEAT_MS = 1_000;
/** A claim of ours older than this that no batch in memory holds was lost in transit: it is given back. */
const UNKNOWN_CLAIM_GRACE_MS = 5_000;

export class StoreQueueBackend implements QueueBackend {
  readonly kind = 'store';
  readonly shared: boolean;
  readonly #store: Store;
  readonly #log: Logger | undefined;
  readonly #wakeups = new EventEmitter().setMaxListeners(0);
  /** Consumers of this process, with their heartbeat timers (server stores). */
  readonly #consumers = new Map<string, NodeJS.Timeout | undefined>();
  /** Batches this process claimed and has not settled yet, by batch id. */
  readonly #held = new Map<string, ClaimedBatch>();
  #unlisten: (() => Promise<void>) | undefined;

  constructor(store: Store, log?: Logger) {
    this.#store = store;
    this.#log = log;
    this.shared = !store.exclusive;
  }

  ready(): Promise<boolean> {
    return this.#store.ping();
  }

  /** On a server store, listens for wake-ups from other nodes' publishes (the store is already open). */
  async start(_options?: { startupTimeoutMs: number }): Promise<void> {
    if (!this.#store.listen || this.#unlisten) return;
    this.#unlisten = await this.#store.listen(
      WAKEUP_CHANNEL,
      (notification) => this.#wakeups.emit(notification.payload),
      () => this.#wakeups.emit(ALL_QUEUES),
    );
  }

  async publish(queue: string, records: readonly Buffer[]): Promise<number> {
    if (records.length === 0) return 0;
    const notify = this.shared ? sql`, pg_notify(${WAKEUP_CHANNEL}, ${queue})` : sql``;
    await this.#store.execute(sql`
      WITH inserted AS (
        INSERT INTO baton_queue_records (queue, payload) SELECT ${queue}, unnest(${sql.param(records)}::bytea[])
        RETURNING 1)
      SELECT count(*) AS n${notify} FROM inserted`);
    this.#wakeups.emit(queue);
    return records.length;
  }

  async registerConsumer(consumer: string, node: string): Promise<void> {
    if (this.#consumers.has(consumer)) return;
    if (!this.shared) {
      this.#consumers.set(consumer, undefined);
      return;
    }
    const beat = (): Promise<unknown> =>
      this.#store.execute(sql`
        INSERT INTO baton_consumers (id, node, last_seen) VALUES (${consumer}, ${node}, now())
        ON CONFLICT (id) DO UPDATE SET last_seen = now()`);
    await beat();
    const timer = setInterval(() => {
      beat().catch((error: unknown) => {
        this.#log?.warn({ err: describeError(error), consumer }, 'store queue: consumer heartbeat failed');
      });
    }, HEARTBEAT_MS);
    timer.unref();
    this.#consumers.set(consumer, timer);
  }

  async unregisterConsumer(consumer: string): Promise<void> {
    if (!this.#consumers.has(consumer)) return;
    clearInterval(this.#consumers.get(consumer));
    this.#consumers.delete(consumer);
    if (this.shared) await this.#store.execute(sql`DELETE FROM baton_consumers WHERE id = ${consumer}`);
  }

  async claim(queue: string, consumer: string, max: number): Promise<ClaimedBatch | undefined> {
    const rows = await this.#store.execute(sql`
      UPDATE baton_queue_records SET claimed_by = ${consumer}, claimed_at = now()
      WHERE id IN (
        SELECT id FROM baton_queue_records
        WHERE queue = ${queue} AND claimed_by IS NULL AND run_after <= now()
        ORDER BY id LIMIT ${max}
        FOR UPDATE SKIP LOCKED)
      RETURNING id::text AS id, payload, attempts, enqueued_at`);
    if (rows.length === 0) return undefined;
    const records = rows.map(toClaimedRecord).sort(byNumericId);
    const batch = { id: randomUUID(), queue, consumer, records };
    this.#held.set(batch.id, batch);
    return batch;
  }

  async acknowledge(tx: Tx, batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<void> {
    if (records.length === 0) return;
    const [row] = await executeIn(
      tx,
      sql`WITH deleted AS (
            DELETE FROM baton_queue_records
            WHERE id = ANY(${sql.param(ids(records))}::bigint[]) AND claimed_by = ${batch.consumer}
            RETURNING 1)
          SELECT count(*)::int AS n FROM deleted`,
    );
    const deleted = Number(row?.['n'] ?? 0);
    if (deleted !== records.length) {
      throw new ClaimLostError(
        `queue "${batch.queue}": ${records.length - deleted} of ${records.length} records were recovered from consumer ${batch.consumer} before it committed`,
      );
    }
  }

  async complete(batch: ClaimedBatch, failures: readonly RecordFailure[]): Promise<void> {
    this.#held.delete(batch.id);
    if (failures.length === 0) return;
    await this.#store.transaction(async (tx) => {
      for (const { record, error, retryAt } of failures) {
        if (retryAt) {
          await executeIn(
            tx,
            sql`UPDATE baton_queue_records
                SET attempts = attempts + 1, claimed_by = NULL, claimed_at = NULL, run_after = ${retryAt}, last_error = ${error}
                WHERE id = ${record.id}::bigint AND claimed_by = ${batch.consumer}`,
          );
        } else {
          await moveToErrors(
            tx,
            sql`id = ${record.id}::bigint AND claimed_by = ${batch.consumer}`,
            sql`attempts + 1`,
            error,
          );
        }
      }
    });
    if (failures.some((failure) => failure.retryAt)) this.#wakeups.emit(batch.queue);
  }

  async release(batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<void> {
    this.#held.delete(batch.id);
    if (records.length === 0) return;
    await this.#store.execute(
      sql`UPDATE baton_queue_records SET claimed_by = NULL, claimed_at = NULL
          WHERE id = ANY(${sql.param(ids(records))}::bigint[]) AND claimed_by = ${batch.consumer}`,
    );
    this.#wakeups.emit(batch.queue);
  }

  async recoverClaims(queue: string, options: { maxAttempts: number }): Promise<number> {
    const reason = 'its node stopped while processing it (the claim was recovered)';
    const local = sql.param([...this.#consumers.keys()]);
    // On a server store a consumer is alive while it heartbeats; on an exclusive store, only ours are.
    const alive = this.shared
      ? sql`SELECT id FROM baton_consumers WHERE last_seen > now() - make_interval(secs => ${CONSUMER_TIMEOUT_MS / 1000})`
      : sql`SELECT unnest(${local}::text[])`;
    const held = sql.param(
      [...this.#held.values()].flatMap((batch) => batch.records.map((record) => record.id)),
    );
    const recovered = await this.#store.transaction(async (tx) => {
      // This process's own consumers are alive whatever their last heartbeat says (it may have just come back).
      const orphaned = sql`queue = ${queue} AND claimed_by IS NOT NULL AND claimed_by NOT IN (${alive})
        AND NOT (claimed_by = ANY(${local}::text[]))`;
      const dead = await moveToErrors(
        tx,
        sql`${orphaned} AND attempts + 1 >= ${options.maxAttempts}`,
        sql`attempts + 1`,
        reason,
      );
      const requeued = await executeIn(
        tx,
        sql`UPDATE baton_queue_records SET attempts = attempts + 1, claimed_by = NULL, claimed_at = NULL, last_error = ${reason}
            WHERE ${orphaned} RETURNING id`,
      );
      // Claims of ours that this process does not hold: their claim committed but its answer was lost with
      // the connection. Nothing ran, so no attempt is counted.
      const unknown = await executeIn(
        tx,
        sql`UPDATE baton_queue_records SET claimed_by = NULL, claimed_at = NULL
            WHERE queue = ${queue} AND claimed_by = ANY(${local}::text[]) AND NOT (id = ANY(${held}::bigint[]))
              AND claimed_at < now() - make_interval(secs => ${UNKNOWN_CLAIM_GRACE_MS / 1000})
            RETURNING id`,
      );
      return dead + requeued.length + unknown.length;
    });
    if (recovered > 0) this.#wakeups.emit(queue);
    return recovered;
  }

  waitForRecords(queue: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const done = (): void => {
        clearTimeout(timer);
        this.#wakeups.off(queue, done);
        this.#wakeups.off(ALL_QUEUES, done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.#wakeups.on(queue, done);
      this.#wakeups.on(ALL_QUEUES, done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  async stats(queue: string): Promise<QueueStats> {
    const [counts] = await this.#store.execute(sql`
      SELECT
        (SELECT count(*) FROM baton_queue_records WHERE queue = ${queue} AND claimed_by IS NULL)::int AS depth,
        (SELECT count(*) FROM baton_queue_records WHERE queue = ${queue} AND claimed_by IS NOT NULL)::int AS in_flight,
        (SELECT count(*) FROM baton_queue_errors WHERE queue = ${queue})::int AS errors`);
    return {
      depth: Number(counts?.['depth'] ?? 0),
      inFlight: Number(counts?.['in_flight'] ?? 0),
      errors: Number(counts?.['errors'] ?? 0),
    };
  }

  async listErrors(queue: string, options: { limit: number; afterId?: string }): Promise<ErrorRecord[]> {
    const after = options.afterId ?? '0';
    const rows = await this.#store.execute(sql`
      SELECT id::text AS id, queue, payload, attempts, error, failed_at, enqueued_at FROM baton_queue_errors
      WHERE queue = ${queue} AND id > ${after}::bigint ORDER BY id LIMIT ${options.limit}`);
    return rows.map((row) => ({
      id: String(row['id']),
      queue: String(row['queue']),
      payload: toBuffer(row['payload']),
      attempts: Number(row['attempts']),
      error: String(row['error']),
      failedAt: toDate(row['failed_at']),
      enqueuedAt: toDate(row['enqueued_at']),
    }));
  }

  async replayErrors(queue: string, options: { ids?: readonly string[]; limit: number }): Promise<number> {
    const chosen = options.ids
      ? sql`queue = ${queue} AND id = ANY(${sql.param([...options.ids])}::bigint[])`
      : sql`queue = ${queue}`;
    const rows = await this.#store.execute(sql`
      WITH moved AS (
        DELETE FROM baton_queue_errors
        WHERE id IN (SELECT id FROM baton_queue_errors WHERE ${chosen} ORDER BY id LIMIT ${options.limit} FOR UPDATE SKIP LOCKED)
        RETURNING id, queue, payload, enqueued_at)
      INSERT INTO baton_queue_records (queue, payload, enqueued_at)
      SELECT queue, payload, enqueued_at FROM moved ORDER BY id
      RETURNING id`);
    if (rows.length > 0) this.#wakeups.emit(queue);
    return rows.length;
  }

  async dropErrors(queue: string, errorIds: readonly string[]): Promise<number> {
    if (errorIds.length === 0) return 0;
    const rows = await this.#store.execute(
      sql`DELETE FROM baton_queue_errors WHERE queue = ${queue} AND id = ANY(${sql.param([...errorIds])}::bigint[]) RETURNING id`,
    );
    return rows.length;
  }

  /**
   * Inside an ingest transaction: true when records of the queue are ready and waiting to be claimed.
   * Records waiting out a retry back-off do not count: new records need not wait for them.
   */
  async hasBacklog(tx: Tx, queue: string): Promise<boolean> {
    const rows = await executeIn(
      tx,
      sql`SELECT 1 FROM baton_queue_records WHERE queue = ${queue} AND claimed_by IS NULL AND run_after <= now() LIMIT 1`,
    );
    return rows.length > 0;
  }

  /** Inside an ingest transaction: records whose inline run failed go to the queue (or error queue). */
  async enqueueFailures(tx: Tx, queue: string, failures: readonly InlineFailure[]): Promise<void> {
    for (const { payload, error, retryAt } of failures) {
      if (retryAt) {
        await executeIn(
          tx,
          sql`INSERT INTO baton_queue_records (queue, payload, attempts, run_after, last_error)
              VALUES (${queue}, ${payload}, 1, ${retryAt}, ${error})`,
        );
      } else {
        await executeIn(
          tx,
          sql`INSERT INTO baton_queue_errors (queue, payload, attempts, error, enqueued_at) VALUES (${queue}, ${payload}, 1, ${error}, now())`,
        );
      }
    }
  }

  /** Wakes the consumers of `queue` (records were added outside `publish`). */
  notify(queue: string): void {
    this.#wakeups.emit(queue);
  }

  async close(): Promise<void> {
    await Promise.all([...this.#consumers.keys()].map((consumer) => this.unregisterConsumer(consumer)));
    await this.#unlisten?.();
    this.#unlisten = undefined;
    this.#wakeups.removeAllListeners();
  }
}

/** Moves the records matching `where` to the error queue with `error`; returns how many moved. */
async function moveToErrors(
  tx: Tx,
  where: ReturnType<typeof sql>,
  attempts: ReturnType<typeof sql>,
  error: string,
): Promise<number> {
  const rows = await executeIn(
    tx,
    sql`WITH moved AS (
          DELETE FROM baton_queue_records WHERE ${where}
          RETURNING id, queue, payload, ${attempts} AS attempts, enqueued_at)
        INSERT INTO baton_queue_errors (queue, payload, attempts, error, enqueued_at)
        SELECT queue, payload, attempts, ${error}, enqueued_at FROM moved ORDER BY id
        RETURNING id`,
  );
  return rows.length;
}

function toClaimedRecord(row: Row): ClaimedRecord {
  return {
    id: String(row['id']),
    payload: toBuffer(row['payload']),
    attempts: Number(row['attempts']),
    enqueuedAt: toDate(row['enqueued_at']),
  };
}

function ids(records: readonly ClaimedRecord[]): string[] {
  return records.map((record) => record.id);
}

function byNumericId(a: ClaimedRecord, b: ClaimedRecord): number {
  return a.id.length - b.id.length || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function toBuffer(value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`expected bytes from the store, got ${typeof value}`);
}

function toDate(value: unknown): Date {
  return value instanceof Date ? value : new Date(String(value));
}
