// Statements and row mapping over Baton's queue tables (baton_queue_records, baton_queue_errors), shared by
// the queue adapters that keep records in PostgreSQL: in the sink (StoreQueueBackend) or in a database of
// their own (PostgresQueueBackend, through a StoreQueueBackend over that database).
import type { SQL } from 'drizzle-orm';
import { sql } from 'drizzle-orm';

import type { Row, Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';
import type { ClaimedRecord } from './backend.js';
import { RECOVERED_REASON } from './backend.js';
import type { Acked } from './batch-ledger.js';

/**
 * For a queue kept in another database than the sink (PostgresQueueBackend): acknowledgements are rows of a
 * ledger in the sink, not deletions of the records' rows in the handler's transaction.
 */
export interface ClaimLedger {
  /**
   * Marks the batches recovered in the ledger and returns the positions (in id order) each had acknowledged,
   * or 'all'. Recovery calls it before it touches a batch's rows, so that a late acknowledgement cannot commit
   * after.
   */
  fence(queue: string, batchIds: readonly string[]): Promise<ReadonlyMap<string, Acked>>;
}

/** Claims to recover, as conditions on baton_queue_records, and what their batches acknowledged. */
export interface ClaimsToRecover {
  /** Claims of dead consumers: one attempt counted. */
  readonly orphaned: SQL;
  /** Claims of this process's consumers that it does not hold: given back without an attempt. */
  readonly unknown: SQL;
  readonly acked: ReadonlyMap<string, Acked>;
}

/**
 * Fences in the ledger the batches of the claims to recover, and returns conditions that choose those
 * batches by id. Fenced batches are recovered whole, whether or not their consumer shows up again meanwhile
 * (it can no longer commit them), so that a batch's rows leave it together and positions keep their meaning.
 */
export async function fenceClaims(
  store: Store,
  ledger: ClaimLedger,
  queue: string,
  claims: { orphaned: SQL; unknown: SQL },
): Promise<ClaimsToRecover> {
  const found = await store.execute(sql`
    SELECT DISTINCT batch_id, (${claims.orphaned}) AS orphaned FROM baton_queue_records
    WHERE ((${claims.orphaned}) OR (${claims.unknown})) AND batch_id IS NOT NULL`);
  const acked = await ledger.fence(
    queue,
    found.map((row) => String(row['batch_id'])),
  );
  const batches = (orphaned: boolean): SQL => {
    const chosen = found.filter((row) => row['orphaned'] === orphaned).map((row) => String(row['batch_id']));
    return sql`queue = ${queue} AND claimed_by IS NOT NULL AND batch_id = ANY(${sql.param(chosen)}::text[])`;
  };
  return { orphaned: batches(true), unknown: batches(false), acked };
}

/**
 * Deletes the records that each batch's ledger row shows acknowledged: positions count, in id order, the
 * rows the batch still holds, which are all of its records since a batch's rows only ever leave it together.
 */
export async function deleteAcknowledged(tx: Tx, acked: ReadonlyMap<string, Acked>): Promise<void> {
  const whole = [...acked].filter(([, positions]) => positions === 'all').map(([batch]) => batch);
  if (whole.length > 0) {
    await executeIn(
      tx,
      sql`DELETE FROM baton_queue_records
          WHERE batch_id = ANY(${sql.param(whole)}::text[]) AND claimed_by IS NOT NULL`,
    );
  }
  const pairs = [...acked].flatMap(([batch, positions]) =>
    positions === 'all' ? [] : positions.map((position) => ({ batch, position })),
  );
  if (pairs.length === 0) return;
  await executeIn(
    tx,
    sql`DELETE FROM baton_queue_records AS r
        USING (SELECT id, batch_id, (row_number() OVER (PARTITION BY batch_id ORDER BY id) - 1)::int AS position
               FROM baton_queue_records
               WHERE batch_id = ANY(${sql.param([...acked.keys()])}::text[]) AND claimed_by IS NOT NULL) AS p,
              unnest(${sql.param(pairs.map((pair) => pair.batch))}::text[],
                     ${sql.param(pairs.map((pair) => pair.position))}::int[]) AS a(batch_id, position)
        WHERE r.id = p.id AND p.batch_id = a.batch_id AND p.position = a.position AND r.batch_id = a.batch_id`,
  );
}

/** Moves the records matching `where` to the error queue with `error`; returns their ids there, in order. */
export async function moveToErrors(
  tx: Tx,
  where: ReturnType<typeof sql>,
  attempts: ReturnType<typeof sql>,
  error: string,
): Promise<string[]> {
  const rows = await executeIn(
    tx,
    sql`WITH moved AS (
          DELETE FROM baton_queue_records WHERE ${where}
          RETURNING id, queue, payload, ${attempts} AS attempts, enqueued_at, key)
        INSERT INTO baton_queue_errors (queue, payload, attempts, error, enqueued_at, key)
        SELECT queue, payload, attempts, ${error}, enqueued_at, key FROM moved ORDER BY id
        RETURNING id::text AS id`,
  );
  return rows.map((row) => String(row['id']));
}

/** What a claim writes on its rows: the consumer, the time, and with a ledger the batch id. */
export function claimAssignment(consumer: string, batchId: string | undefined): SQL {
  const setBatch = batchId === undefined ? sql`` : sql`, batch_id = ${batchId}`;
  return sql`claimed_by = ${consumer}, claimed_at = now()${setBatch}`;
}

/**
 * Whether a claimed row comes from a dead consumer's claim, so that the runner runs it alone; always false
 * with a ledger (`batchId`), whose batches leave the queue whole and are never split.
 */
export function orphanedFlag(batchId: string | undefined): SQL {
  return batchId === undefined ? sql`last_error IS NOT DISTINCT FROM ${RECOVERED_REASON}` : sql`false`;
}

/** A claimed row as the record at `position` of its batch. */
export function toClaimedRecord(row: Row, position: number): ClaimedRecord {
  return {
    id: String(row['id']),
    position,
    payload: toBuffer(row['payload']),
    attempts: Number(row['attempts']),
    enqueuedAt: toDate(row['enqueued_at']),
    ...(typeof row['key'] === 'string' ? { key: row['key'] } : {}),
  };
}

export function ids(records: readonly ClaimedRecord[]): string[] {
  return records.map((record) => record.id);
}

/** Orders rows by their `id` column, a bigint as text. */
export function byNumericId(a: Row, b: Row): number {
  const x = String(a['id']);
  const y = String(b['id']);
  return x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
}

export function toBuffer(value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`expected bytes from the store, got ${typeof value}`);
}

export function toDate(value: unknown): Date {
  return value instanceof Date ? value : new Date(String(value));
}
