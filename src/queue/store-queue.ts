// Queues kept in the sink database itself (`backend = "store"`): a record is a row of baton_queue_records,
// claimed with FOR UPDATE SKIP LOCKED and deleted in the handler's own transaction, so its effect and its
// acknowledgement commit together. Runs the same SQL on PGlite and on a PostgreSQL server. With a ledger
// (options.ledger) it serves a queue kept in another database than the sink: see postgres-queue.ts.
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';

import type { SQL } from 'drizzle-orm';
import { sql } from 'drizzle-orm';

import type { Logger } from '../log.js';
import { batonChannel } from '../store/baton-schema.js';
import type { Row, Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';
import { Heartbeats } from '../util/heartbeats.js';
import { ClaimLostError, describeError } from '../errors.js';
import type {
  ClaimedBatch,
  ClaimedRecord,
  ErrorPage,
  ErrorRecord,
  InlineClaim,
  InlineFailure,
  InlineIngest,
  QueueBackend,
  QueueStats,
  RecordFailure,
  QueueSettings,
} from './backend.js';
import { DEFAULT_QUEUE_SETTINGS, RECOVERED_REASON } from './backend.js';
import type { RecordOptions } from './record-options.js';
import { anyValue } from '../util/per-record.js';
import type { RateLimiter } from './rate-limit.js';
import { StoreRateLimiter } from './rate-limit.js';
import { insertRecordsStatement, keyTurns } from './store-insert.js';
import { claimKeyedStatement, removeEmptyKeys, saveQueueSettings } from './store-keys.js';
import { INLINE_CLAIM, insertInlineClaim, settleInlineClaim, unpackInlineClaims } from './inline-claims.js';
import { readQueueCounts } from './queue-counts.js';
import type { ClaimLedger } from './queue-tables.js';
import { keepUpQueue, UPKEEP_INTERVAL_MS } from './queue-upkeep.js';
import {
  byNumericId,
  claimAssignment,
  orphanedFlag,
  deleteAcknowledged,
  fenceClaims,
  ids,
  moveToErrors,
  toBuffer,
  toClaimedRecord,
  toDate,
} from './queue-tables.js';

export interface StoreQueueOptions {
  /** Claims write their batch id on their rows (batch_id), and recovery consults this ledger first. */
  readonly ledger?: ClaimLedger;
}

/** What settle() does to each part of a batch, in one transaction. */
export interface BatchSettlement {
  /** Records acknowledged in another database: their rows are deleted. */
  readonly done?: readonly ClaimedRecord[];
  /** Records whose run failed: one attempt counted, then retried or moved to the error queue. */
  readonly failures?: readonly RecordFailure[];
  /** Records given back without counting an attempt. */
  readonly released?: readonly ClaimedRecord[];
}

/** Channel of the NOTIFY that wakes the consumers of other nodes (after Baton's schema: batonChannel); the payload is the queue name. */
export const WAKEUP_CHANNEL = 'baton_queue_records';
/** Event on the local emitter that wakes every queue (after a LISTEN reconnect, notifications may be lost). */
const ALL_QUEUES = Symbol('all queues');
/** A consumer not seen for this long is dead, and its claims are recovered. */
export const CONSUMER_TIMEOUT_MS = 3_000;
const HEARTBEAT_MS = 1_000;
/**
 * How long an idle consumer waits at most while the LISTEN connection is up: a NOTIFY wakes it when records
 * are published, and it sleeps no later than the earliest back-off ends; this poll is the safety net.
 */
export const LISTENING_POLL_MS = 5_000;
/**
 * The idle wait when the earliest record is due already: it became due since the claim looked, or another
 * consumer's claim holds its row locked for a moment (a record not due yet is waited for to the millisecond).
 */
const DUE_WAIT_MS = 50;
/**
 * A store queue counts its delayed records up to this many (a walk of the index baton_queue_records_due
 * past the due ones): beyond, it says so (`delayedCapped`), so that reading the figure stays bounded.
 */
export const DELAYED_COUNT_CAP = 10_000;
/**
 * How long an idle consumer of an ordered queue waits at most: a key freed by another node, or whose failed
 * head becomes due, wakes nobody.
 */
const KEYED_POLL_MS = 250;
/** A claim of ours older than this that no batch in memory holds was lost in transit: it is given back. */
const UNKNOWN_CLAIM_GRACE_MS = 5_000;

/**
 * The claim: up to `max` ready records of `queue`, in the order they became ready (run_after, then id),
 * which is the order of the index baton_queue_records_due: the inner select walks it from its start for
 * `max` rows, with or without statistics, past none of the records waiting out a back-off. The ids come
 * back as an array, so that the update finds its rows by primary key whatever the planner guesses of the
 * subquery. With `batchId` (a ledger), the batch id is written on the rows; without, records of a dead
 * consumer's claim come back marked `orphaned`, so that the runner runs each alone (with a ledger a batch's
 * rows must leave it together, so it is never split).
 */
export function claimStatement(
  queue: string,
  consumer: string,
  max: number,
  { batchId }: { batchId: string | undefined },
): SQL {
  return sql`
    UPDATE baton_queue_records SET ${claimAssignment(consumer, batchId)}
    WHERE id = ANY(ARRAY(
      SELECT id FROM baton_queue_records
      WHERE queue = ${queue} AND claimed_by IS NULL AND key IS NULL AND run_after <= now()
      ORDER BY run_after, id LIMIT ${max}
      FOR UPDATE SKIP LOCKED))
    RETURNING id::text AS id, payload, attempts, enqueued_at, ${orphanedFlag(batchId)} AS orphaned`;
}

/**
 * How many records of `queue` are not due yet, up to DELAYED_COUNT_CAP + 1: a walk of the index
 * baton_queue_records_due from the first entry past now(), stopped there.
 */
export function countDelayedStatement(queue: string): SQL {
  return sql`
    SELECT count(*)::int AS n FROM (
      SELECT 1 FROM baton_queue_records
      WHERE queue = ${queue} AND claimed_by IS NULL AND key IS NULL AND run_after > now()
      ORDER BY run_after, id LIMIT ${DELAYED_COUNT_CAP + 1}) AS ahead`;
}

export class StoreQueueBackend implements QueueBackend, InlineIngest {
  readonly kind = 'store';
  readonly shared: boolean;
  /** Inline ingest needs the one owner of the store: no other process may claim meanwhile. */
  readonly inline: InlineIngest | undefined;
  readonly rates: RateLimiter;
  readonly #store: Store;
  readonly #ledger: ClaimLedger | undefined;
  readonly #log: Logger | undefined;
  readonly #wakeups = new EventEmitter().setMaxListeners(0);
  /** Consumers of this process, with their heartbeat timers (server stores). */
  readonly #consumers: Heartbeats;
  /** Batches this process claimed and has not settled yet, by batch id. */
  readonly #held = new Map<string, ClaimedBatch>();
  /** When each queue's upkeep last ran. */
  readonly #keptUpAt = new Map<string, number>();
  #unlisten: (() => Promise<void>) | undefined;
  /** Whether the LISTEN connection is up, so that publishes of other nodes wake the consumers. */
  #listening = false;
  /** When each queue (or every queue: ALL_QUEUES) was last woken, and when its last claim started. */
  readonly #wokenAt = new Map<string | symbol, number>();
  readonly #claimedAt = new Map<string, number>();
  readonly #settings = new Map<string, QueueSettings>();
  /** The settings saveQueueSettings() wrote for each queue. */
  readonly #saved = new Map<string, QueueSettings>();

  constructor(store: Store, log?: Logger, options: StoreQueueOptions = {}) {
    this.#store = store;
    this.#ledger = options.ledger;
    this.#log = log;
    this.shared = !store.exclusive;
    this.inline = store.exclusive ? this : undefined;
    this.rates = new StoreRateLimiter(store);
    this.#consumers = new Heartbeats(HEARTBEAT_MS, 'store queue', log);
  }

  ready(): Promise<boolean> {
    return this.#store.ping();
  }

  /** On a server store, listens for wake-ups from other nodes' publishes (the store is already open). */
  async start(_options?: { startupTimeoutMs: number }): Promise<void> {
    if (!this.#store.listen || this.#unlisten) return;
    this.#unlisten = await this.#store.listen(
      batonChannel(this.#store.schema, WAKEUP_CHANNEL),
      (notification) => this.#wake(notification.payload),
      () => {
        this.#listening = true;
        this.#wake(ALL_QUEUES);
      },
      () => {
        this.#listening = false;
      },
    );
  }

  configure(queue: string, settings: QueueSettings): void {
    this.#settings.set(queue, settings);
  }

  /**
   * Before its first claim of a queue, this process writes the queue's settings for writers without a node
   * (see saveQueueSettings), once.
   */
  async #saveSettings(queue: string, settings: QueueSettings): Promise<void> {
    if (this.#saved.get(queue) === settings) return;
    await saveQueueSettings(this.#store, queue, settings);
    this.#saved.set(queue, settings);
  }

  async publish(queue: string, records: readonly Buffer[], options: RecordOptions = {}): Promise<number> {
    if (records.length === 0) return 0;
    const notify = this.#notifyColumn(queue);
    if (anyValue(options.delays) || anyValue(options.keys) || anyValue(options.ids)) {
      const settings = this.#settings.get(queue) ?? DEFAULT_QUEUE_SETTINGS;
      await this.#store.execute(insertRecordsStatement({ queue, records, options, settings, notify }));
    } else {
      await this.#store.execute(sql`
        WITH inserted AS (
          INSERT INTO baton_queue_records (queue, payload) SELECT ${queue}, unnest(${sql.param(records)}::bytea[])
          RETURNING 1)
        SELECT count(*) AS n${notify} FROM inserted`);
    }
    this.#wake(queue);
    return records.length;
  }

  async registerConsumer(consumer: string, node: string): Promise<void> {
    // On an exclusive store nobody else looks: the consumer only needs to be known here.
    await this.#consumers.add(
      consumer,
      this.shared
        ? () =>
            this.#store.execute(sql`
              INSERT INTO baton_consumers (id, node, last_seen) VALUES (${consumer}, ${node}, now())
              ON CONFLICT (id) DO UPDATE SET last_seen = now()`)
        : undefined,
    );
  }

  async unregisterConsumer(consumer: string): Promise<void> {
    if (this.#consumers.remove(consumer) && this.shared) {
      await this.#store.execute(sql`DELETE FROM baton_consumers WHERE id = ${consumer}`);
    }
  }

  async claim(queue: string, consumer: string, max: number): Promise<ClaimedBatch | undefined> {
    const id = randomUUID();
    this.#claimedAt.set(queue, performance.now());
    const settings = this.#settings.get(queue) ?? DEFAULT_QUEUE_SETTINGS;
    await this.#saveSettings(queue, settings);
    const batchId = this.#ledger ? id : undefined;
    let rows: Row[];
    if (settings.ordering === 'key') {
      const found = await this.#store.execute(
        claimKeyedStatement(queue, consumer, max, { batchId, settings }),
      );
      rows = found.filter((row) => row['empty'] !== true);
      const empty = found.filter((row) => row['empty'] === true).map((row) => String(row['key']));
      // Keys found empty are removed after the claim; one left for later costs a later claim a look.
      await removeEmptyKeys(this.#store, queue, empty).catch((error: unknown) => {
        this.#log?.debug({ queue, err: describeError(error) }, `queue "${queue}": empty keys not removed`);
      });
    } else {
      rows = await this.#store.execute(claimStatement(queue, consumer, max, { batchId }));
    }
    if (rows.length === 0) return undefined;
    // In id order: a ledger's positions must mean the same records at acknowledgement and at recovery.
    const records = rows.sort(byNumericId).map((row, position) => ({
      ...toClaimedRecord(row, position),
      ...(row['orphaned'] === true ? { orphaned: true } : {}),
    }));
    const batch = { id, queue, consumer, records };
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

  async complete(
    batch: ClaimedBatch,
    failures: readonly RecordFailure[],
  ): Promise<ReadonlyMap<string, string>> {
    const moved = await this.settle(batch, { failures });
    // The batch's keys are free again: this process's other consumers of the queue may take them at once.
    if (batch.records.some((record) => record.key !== undefined)) this.#wake(batch.queue);
    return moved;
  }

  async release(batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<void> {
    await this.settle(batch, { released: records });
  }

  /**
   * Settles a batch in one transaction. complete() and release() are its two common cases; an adapter that
   * acknowledges in another database also deletes the `done` rows here, once that database committed. Each
   * part touches only rows the batch still holds (another node may have recovered them meanwhile). Resolves
   * to the failures moved to the error queue: record id → error record id.
   */
  async settle(
    batch: ClaimedBatch,
    { done = [], failures = [], released = [] }: BatchSettlement,
  ): Promise<ReadonlyMap<string, string>> {
    this.#held.delete(batch.id);
    if (done.length + failures.length + released.length === 0) return new Map();
    const ours = this.#ledger
      ? sql`claimed_by = ${batch.consumer} AND batch_id = ${batch.id}`
      : sql`claimed_by = ${batch.consumer}`;
    const moved = await this.#store.transaction(async (tx) => {
      if (done.length > 0) {
        await executeIn(
          tx,
          sql`DELETE FROM baton_queue_records WHERE id = ANY(${sql.param(ids(done))}::bigint[]) AND ${ours}`,
        );
      }
      if (released.length > 0) {
        await executeIn(
          tx,
          sql`UPDATE baton_queue_records SET claimed_by = NULL, claimed_at = NULL, batch_id = NULL
              WHERE id = ANY(${sql.param(ids(released))}::bigint[]) AND ${ours}`,
        );
      }
      // One statement for the retries and one for the error queue, whatever the number of failures: a batch
      // of junk must not hold the node's thread for a statement per record.
      const retries = failures.filter((failure) => failure.retryAt !== undefined);
      if (retries.length > 0) {
        await executeIn(
          tx,
          sql`UPDATE baton_queue_records AS r
              SET attempts = r.attempts + 1, claimed_by = NULL, claimed_at = NULL, batch_id = NULL,
                  run_after = f.run_after, last_error = f.error
              FROM unnest(${sql.param(retries.map((failure) => failure.record.id))}::bigint[],
                          ${sql.param(retries.map((failure) => (failure.retryAt as Date).toISOString()))}::timestamptz[],
                          ${sql.param(retries.map((failure) => failure.error))}::text[]) AS f(id, run_after, error)
              WHERE r.id = f.id AND ${ours}`,
        );
      }
      const dead = failures.filter((failure) => failure.retryAt === undefined);
      if (dead.length === 0) return new Map<string, string>();
      // Error queue ids are taken in the order of the record ids: the k-th of each pairs up.
      const pairs = await executeIn(
        tx,
        sql`WITH f AS (
              SELECT * FROM unnest(${sql.param(dead.map((failure) => failure.record.id))}::bigint[],
                                   ${sql.param(dead.map((failure) => failure.error))}::text[]) AS f(id, error)),
            moved AS (
              DELETE FROM baton_queue_records AS r USING f WHERE r.id = f.id AND ${ours}
              RETURNING r.id, r.queue, r.payload, r.attempts + 1 AS attempts, f.error, r.enqueued_at, r.key),
            inserted AS (
              INSERT INTO baton_queue_errors (queue, payload, attempts, error, enqueued_at, key)
              SELECT queue, payload, attempts, error, enqueued_at, key FROM moved ORDER BY id
              RETURNING id)
            SELECT m.id::text AS record, i.id::text AS error
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM moved) AS m
            JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM inserted) AS i USING (n)`,
      );
      return new Map(pairs.map((row) => [String(row['record']), String(row['error'])]));
    });
    if (released.length > 0 || failures.some((failure) => failure.retryAt)) this.#wake(batch.queue);
    return moved;
  }

  async recoverClaims(queue: string, options: { maxAttempts: number }): Promise<number> {
    const reason = RECOVERED_REASON;
    const local = sql.param(this.#consumers.ids());
    // On a server store a consumer is alive while it heartbeats; on an exclusive store, only ours are.
    const alive = this.shared
      ? sql`SELECT id FROM baton_consumers WHERE last_seen > now() - make_interval(secs => ${CONSUMER_TIMEOUT_MS / 1000})`
      : sql`SELECT unnest(${local}::text[])`;
    const held = sql.param(
      [...this.#held.values()].flatMap((batch) => batch.records.map((record) => record.id)),
    );
    // This process's own consumers are alive whatever their last heartbeat says (it may have just come back).
    const orphaned = sql`queue = ${queue} AND claimed_by IS NOT NULL AND claimed_by NOT IN (${alive})
      AND NOT (claimed_by = ANY(${local}::text[]))`;
    // Claims of ours that this process does not hold: their claim committed but its answer was lost with
    // the connection. Nothing ran, so no attempt is counted.
    const unknown = sql`queue = ${queue} AND claimed_by = ANY(${local}::text[]) AND NOT (id = ANY(${held}::bigint[]))
      AND batch_id IS DISTINCT FROM ${INLINE_CLAIM}
      AND claimed_at < now() - make_interval(secs => ${UNKNOWN_CLAIM_GRACE_MS / 1000})`;
    // Most runs find nothing: one read of the index baton_queue_records_held says so, where the recovery
    // transaction below costs a handful of statements (each firing the count triggers) every second.
    if (!(await this.#anyToRecover(orphaned, unknown))) {
      await this.#keepUp(queue);
      return 0;
    }
    // With a ledger, the batches are fenced first, then chosen by id rather than by these conditions.
    const claims = this.#ledger
      ? await fenceClaims(this.#store, this.#ledger, queue, { orphaned, unknown })
      : { orphaned, unknown, acked: new Map<string, readonly number[]>() };
    const recovered = await this.#store.transaction(async (tx) => {
      if (!this.#ledger) await unpackInlineClaims(tx, orphaned);
      await deleteAcknowledged(tx, claims.acked);
      const dead = await moveToErrors(
        tx,
        sql`${claims.orphaned} AND attempts + 1 >= ${options.maxAttempts}`,
        sql`attempts + 1`,
        reason,
      );
      const requeued = await executeIn(
        tx,
        sql`UPDATE baton_queue_records
            SET attempts = attempts + 1, claimed_by = NULL, claimed_at = NULL, batch_id = NULL, last_error = ${reason}
            WHERE ${claims.orphaned} RETURNING id`,
      );
      const given = await executeIn(
        tx,
        sql`UPDATE baton_queue_records SET claimed_by = NULL, claimed_at = NULL, batch_id = NULL
            WHERE ${claims.unknown} RETURNING id`,
      );
      return dead.length + requeued.length + given.length;
    });
    if (recovered > 0) this.#wake(queue);
    await this.#keepUp(queue);
    return recovered;
  }

  /** Whether any claimed record of the queue meets either condition of recovery. */
  async #anyToRecover(orphaned: SQL, unknown: SQL): Promise<boolean> {
    const [row] = await this.#store.execute(sql`
      SELECT EXISTS (SELECT 1 FROM baton_queue_records WHERE (${orphaned}) OR (${unknown})) AS found`);
    return row?.['found'] === true;
  }

  /** The queue's upkeep (queue-upkeep.ts), at most every UPKEEP_INTERVAL_MS: recovery runs it. */
  async #keepUp(queue: string): Promise<void> {
    if (Date.now() - (this.#keptUpAt.get(queue) ?? 0) < UPKEEP_INTERVAL_MS) return;
    this.#keptUpAt.set(queue, Date.now());
    // Upkeep that fails (a statement limit ending a long VACUUM) is tried again next time; recovery is done.
    await keepUpQueue(this.#store, queue, { shared: this.shared }).catch((error: unknown) => {
      this.#log?.warn(
        { queue, err: describeError(error) },
        `queue "${queue}": upkeep of the queue tables failed`,
      );
    });
  }

  /** The batches holding claimed records of `queue` (claims written with a ledger): id → rows it holds. */
  async claimedBatches(queue: string): Promise<Map<string, number>> {
    const rows = await this.#store.execute(sql`
      SELECT batch_id, count(*)::int AS n FROM baton_queue_records
      WHERE queue = ${queue} AND claimed_by IS NOT NULL AND batch_id IS NOT NULL
      GROUP BY batch_id`);
    return new Map(rows.map((row) => [String(row['batch_id']), Number(row['n'])]));
  }

  /**
   * Waits for a wake-up of `queue`, until its earliest record is due (a delayed record, or one waiting out a
   * back-off), or `timeoutMs` (while the LISTEN connection is up, LISTENING_POLL_MS), whichever comes first.
   * Resolves at once when the queue was woken since its last claim started (that claim may not have seen
   * the records).
   */
  async waitForRecords(queue: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
    const since = this.#claimedAt.get(queue) ?? 0;
    const woken = (): boolean =>
      (this.#wokenAt.get(queue) ?? -1) >= since || (this.#wokenAt.get(ALL_QUEUES) ?? -1) >= since;
    if (signal.aborted || woken()) return;
    const waitMs = await this.#untilDue(queue, this.#listening ? LISTENING_POLL_MS : timeoutMs);
    if (signal.aborted || woken()) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#wakeups.off(queue, done);
        this.#wakeups.off(ALL_QUEUES, done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      this.#wakeups.on(queue, done);
      this.#wakeups.on(ALL_QUEUES, done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /**
   * Milliseconds until the earliest unclaimed record of `queue` is due (the head of the index
   * baton_queue_records_due, the database's clock), at most `maxMs`; a record already due gives DUE_WAIT_MS.
   */
  async #untilDue(queue: string, maxMs: number): Promise<number> {
    try {
      const [row] = await this.#store.execute(sql`
        SELECT ceil(extract(epoch FROM run_after - now()) * 1000)::float8 AS ms FROM baton_queue_records
        WHERE queue = ${queue} AND claimed_by IS NULL AND key IS NULL ORDER BY run_after, id LIMIT 1`);
      // Keyed records wait by key, outside that index: an ordered queue looks again at least every KEYED_POLL_MS.
      const ordered = this.#settings.get(queue)?.ordering === 'key';
      const limit = ordered ? Math.min(maxMs, KEYED_POLL_MS) : maxMs;
      if (!row) return limit;
      const ms = Number(row['ms']);
      return Math.min(limit, ms > 0 ? ms : DUE_WAIT_MS);
    } catch {
      // The claim that follows reports what is wrong with the store; until then, the embedded store's poll.
      return Math.min(maxMs, 500);
    }
  }

  /**
   * Read from the queue counts (queue-counts.ts): a few rows, whatever the number of records. The delayed
   * records change with time alone, so no counter can keep them: they are counted by a walk of the index
   * baton_queue_records_due from the first record not yet due, stopped at DELAYED_COUNT_CAP.
   */
  async stats(queue: string): Promise<QueueStats> {
    const [counts, [row]] = await Promise.all([
      readQueueCounts(this.#store, queue),
      this.#store.execute(countDelayedStatement(queue)),
    ]);
    const ahead = Number(row?.['n'] ?? 0);
    return ahead > DELAYED_COUNT_CAP
      ? { ...counts, delayed: DELAYED_COUNT_CAP, delayedCapped: true }
      : { ...counts, delayed: ahead };
  }

  async listErrors(queue: string, options: ErrorPage): Promise<ErrorRecord[]> {
    // A walk of the (queue, id) index from the cursor, ordered by the number e.id: ordered by a text alias
    // `id`, pages would run 1, 10, 100, 2, … and skip records.
    const columns = sql`e.id, e.id::text AS id_text, e.queue, e.payload, e.attempts, e.error, e.failed_at, e.enqueued_at`;
    const after = sql`e.id > ${options.afterId ?? '0'}::bigint`;
    const rows = await this.#store.execute(
      options.beforeId === undefined
        ? sql`
          SELECT ${columns} FROM baton_queue_errors e WHERE e.queue = ${queue} AND ${after}
          ORDER BY e.id LIMIT ${options.limit}`
        : sql`
          SELECT * FROM (
            SELECT ${columns} FROM baton_queue_errors e
            WHERE e.queue = ${queue} AND e.id < ${options.beforeId}::bigint AND ${after}
            ORDER BY e.id DESC LIMIT ${options.limit}) page
          ORDER BY page.id`,
    );
    return rows.map((row) => ({
      id: String(row['id_text']),
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
    // The other nodes' consumers are woken as by a publish: idle, they wait for a NOTIFY up to seconds.
    const notify = this.#notifyColumn(queue);
    // A keyed record goes back to the end of its key, behind the records that followed it meanwhile.
    const ordered = (this.#settings.get(queue) ?? DEFAULT_QUEUE_SETTINGS).ordering === 'key';
    const [row] = await this.#store.execute(sql`
      WITH moved AS (
        DELETE FROM baton_queue_errors
        WHERE id IN (SELECT id FROM baton_queue_errors WHERE ${chosen} ORDER BY id LIMIT ${options.limit} FOR UPDATE SKIP LOCKED)
        RETURNING id, queue, payload, enqueued_at, CASE WHEN ${ordered}::boolean THEN key END AS key),
      turns AS (
        ${keyTurns(sql`baton_queue_keys`, sql`SELECT queue, key FROM moved WHERE key IS NOT NULL GROUP BY queue, key ORDER BY min(id)`)}),
      inserted AS (
        INSERT INTO baton_queue_records (queue, payload, enqueued_at, key)
        SELECT queue, payload, enqueued_at, key FROM moved ORDER BY id
        RETURNING id)
      SELECT count(*) AS n${notify} FROM inserted`);
    const replayed = Number(row?.['n'] ?? 0);
    if (replayed > 0) this.#wake(queue);
    return replayed;
  }

  async dropErrors(queue: string, errorIds: readonly string[]): Promise<number> {
    if (errorIds.length === 0) return 0;
    const rows = await this.#store.execute(
      sql`DELETE FROM baton_queue_errors WHERE queue = ${queue} AND id = ANY(${sql.param([...errorIds])}::bigint[]) RETURNING id`,
    );
    return rows.length;
  }

  async claimInline(
    queue: string,
    consumer: string,
    records: readonly Buffer[],
  ): Promise<InlineClaim | undefined> {
    const claim = await insertInlineClaim(this.#store, queue, consumer, records);
    if (!claim) await this.publish(queue, records);
    return claim;
  }

  settleInline(
    tx: Tx,
    claim: InlineClaim,
    outcome: { failures?: readonly InlineFailure[]; requeue?: boolean },
  ): Promise<ReadonlyMap<number, string>> {
    return settleInlineClaim(tx, claim, outcome);
  }

  /** A column that sends the NOTIFY waking other nodes' consumers of `queue` (none when none share the store). */
  #notifyColumn(queue: string): SQL {
    return this.shared
      ? sql`, pg_notify(${batonChannel(this.#store.schema, WAKEUP_CHANNEL)}, ${queue})`
      : sql``;
  }

  #wake(queue: string | symbol): void {
    this.#wokenAt.set(queue, performance.now());
    this.#wakeups.emit(queue);
  }

  /** Wakes the consumers of `queue` (records were added outside `publish`). */
  notify(queue: string): void {
    this.#wake(queue);
  }

  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.#store.transaction(fn);
  }

  async close(): Promise<void> {
    await Promise.all(this.#consumers.ids().map((consumer) => this.unregisterConsumer(consumer)));
    await this.#unlisten?.();
    this.#unlisten = undefined;
    this.#listening = false;
    this.#wakeups.removeAllListeners();
  }
}
