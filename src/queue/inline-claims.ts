// Inline claims: a request's records held in one claimed row of baton_queue_records (batch_id 'inline',
// the payload the records packed together), written before its handler runs, so that a crash mid-request
// leaves a claim that recovery turns into the request's records with an attempt counted. One row per
// request keeps inline ingest at one write per record, plus two per request.
import type { SQL } from 'drizzle-orm';
import { sql } from 'drizzle-orm';

import { ClaimLostError } from '../errors.js';
import type { Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';
import type { InlineClaim, InlineFailure } from './backend.js';
import { byNumericId, toBuffer, toDate } from './queue-tables.js';

/** batch_id of a row that holds an inline request's records (never set otherwise without a ledger). */
export const INLINE_CLAIM = 'inline';

/**
 * Stores `records` as one claim row of `consumer`, unless ready records wait in `queue`: then nothing is
 * written and undefined is returned (the caller publishes them, so that they wait their turn).
 */
export async function insertInlineClaim(
  store: Store,
  queue: string,
  consumer: string,
  records: readonly Buffer[],
): Promise<InlineClaim | undefined> {
  // Ready records waiting make the new ones wait their turn (those waiting out a retry back-off do not
  // count). Sent as base64 text: a large bytea parameter costs the embedded store about ten times more to
  // take in (110 ms against 10 for 5000 records).
  const packed = packRecords(records).toString('base64');
  const [row] = await store.execute(sql`
    INSERT INTO baton_queue_records (queue, payload, claimed_by, claimed_at, batch_id)
    SELECT ${queue}, decode(${packed}, 'base64'), ${consumer}, now(), ${INLINE_CLAIM}
    WHERE NOT EXISTS (${readyRecords(queue)})
    RETURNING id::text AS id`);
  return row && { id: String(row['id']), queue, consumer, records };
}

/**
 * The ready records of `queue`, for an existence test: a range of the index baton_queue_records_due, whose
 * first entry answers (records waiting out a back-off sort after it).
 */
export function readyRecords(queue: string): SQL {
  return sql`SELECT 1 FROM baton_queue_records WHERE queue = ${queue} AND claimed_by IS NULL AND key IS NULL AND run_after <= now()`;
}

/**
 * Inside the handler's transaction: removes the claim row (ClaimLostError when it is gone); `failures` go
 * to the queue to be retried or to the error queue, `requeue` puts every record back unclaimed. Resolves to
 * the positions moved to the error queue → their error queue ids.
 */
export async function settleInlineClaim(
  tx: Tx,
  claim: InlineClaim,
  { failures = [], requeue = false }: { failures?: readonly InlineFailure[]; requeue?: boolean },
): Promise<ReadonlyMap<number, string>> {
  const { queue, records } = claim;
  const removed = await executeIn(
    tx,
    sql`DELETE FROM baton_queue_records WHERE id = ${claim.id}::bigint AND claimed_by = ${claim.consumer} RETURNING 1`,
  );
  if (removed.length === 0) {
    throw new ClaimLostError(
      `queue "${queue}": the inline claim ${claim.id} was recovered before it committed`,
    );
  }
  if (requeue) {
    await executeIn(
      tx,
      sql`INSERT INTO baton_queue_records (queue, payload)
          SELECT ${queue}, p FROM unnest(${sql.param(records)}::bytea[]) WITH ORDINALITY AS u(p, n) ORDER BY n`,
    );
  }
  const payloads = (list: readonly InlineFailure[]) =>
    sql.param(list.map((failure) => records[failure.position] as Buffer));
  const errors = (list: readonly InlineFailure[]) => sql.param(list.map((failure) => failure.error));
  const retries = failures.filter((failure) => failure.retryAt !== undefined);
  if (retries.length > 0) {
    const times = sql.param(retries.map((failure) => (failure.retryAt as Date).toISOString()));
    await executeIn(
      tx,
      sql`INSERT INTO baton_queue_records (queue, payload, attempts, run_after, last_error)
          SELECT ${queue}, p, 1, t, e
          FROM unnest(${payloads(retries)}::bytea[], ${times}::timestamptz[], ${errors(retries)}::text[])
               WITH ORDINALITY AS u(p, t, e, n)
          ORDER BY n`,
    );
  }
  const dead = failures.filter((failure) => failure.retryAt === undefined);
  if (dead.length === 0) return new Map();
  const moved = await executeIn(
    tx,
    sql`WITH inserted AS (
          INSERT INTO baton_queue_errors (queue, payload, attempts, error, enqueued_at)
          SELECT ${queue}, p, 1, e, now()
          FROM unnest(${payloads(dead)}::bytea[], ${errors(dead)}::text[]) WITH ORDINALITY AS u(p, e, n)
          ORDER BY n
          RETURNING id)
        SELECT id::text AS id FROM inserted ORDER BY id`,
  );
  // Ids are taken in insertion order: the k-th error id is the k-th failure's.
  return new Map(moved.map((row, index) => [(dead[index] as InlineFailure).position, String(row['id'])]));
}

/** An inline request's records as one bytea: each record's length (4 bytes, big-endian), then its bytes. */
function packRecords(records: readonly Buffer[]): Buffer {
  const packed = Buffer.allocUnsafe(records.reduce((sum, record) => sum + 4 + record.length, 0));
  let offset = 0;
  for (const record of records) {
    offset = packed.writeUInt32BE(record.length, offset);
    offset += record.copy(packed, offset);
  }
  return packed;
}

function unpackRecords(packed: Buffer): Buffer[] {
  const records: Buffer[] = [];
  for (let offset = 0; offset < packed.length;) {
    const length = packed.readUInt32BE(offset);
    records.push(packed.subarray(offset + 4, offset + 4 + length));
    offset += 4 + length;
  }
  return records;
}

/**
 * Inside the recovery transaction: turns each orphaned inline claim row into its request's records, still
 * claimed by the dead consumer, so that the recovery that follows counts an attempt for each of them as for
 * a claimed batch (and moves them to the error queue when they are out of attempts).
 */
export async function unpackInlineClaims(tx: Tx, orphaned: SQL): Promise<void> {
  const claims = await executeIn(
    tx,
    sql`DELETE FROM baton_queue_records WHERE ${orphaned} AND batch_id = ${INLINE_CLAIM}
        RETURNING id, queue, payload, attempts, enqueued_at, claimed_by, claimed_at`,
  );
  for (const claim of claims.sort(byNumericId)) {
    await executeIn(
      tx,
      sql`INSERT INTO baton_queue_records (queue, payload, attempts, enqueued_at, claimed_by, claimed_at)
          SELECT ${claim['queue']}, p, ${claim['attempts']}, ${toDate(claim['enqueued_at']).toISOString()}::timestamptz,
                 ${claim['claimed_by']}, ${toDate(claim['claimed_at']).toISOString()}::timestamptz
          FROM unnest(${sql.param(unpackRecords(toBuffer(claim['payload'])))}::bytea[]) WITH ORDINALITY AS u(p, n)
          ORDER BY n`,
    );
  }
}
