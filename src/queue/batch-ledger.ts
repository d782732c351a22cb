// The batch ledger (`baton_batch_ledger` in the sink): for queues whose records cannot be deleted in the
// handler's own transaction (Redis lists, PostgreSQL queues in another database), that transaction writes the
// batch's id and the positions it acknowledged instead. Claim recovery marks the row 'recovered' before it
// gives anything back, so a consumer thought dead cannot commit the batch afterwards (a row lock orders the two).
import { sql } from 'drizzle-orm';

import type { Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';
import type { ClaimedBatch, ClaimedRecord } from './backend.js';
import { ClaimLostError } from './backend.js';

/** Rows of settled batches are kept this long (they fence a consumer that might still try to commit). */
const RETENTION_HOURS = 24;

export class BatchLedger {
  readonly #store: Store;

  /** `store`: the sink, with Baton's migrations applied. */
  constructor(store: Store) {
    this.#store = store;
  }

  /**
   * Inside the handler's transaction: records `positions` of the batch as committed. ClaimLostError when the
   * batch was recovered meanwhile, so that the transaction rolls back instead of applying records twice.
   */
  async acknowledge(tx: Tx, batch: ClaimedBatch, positions: readonly number[]): Promise<void> {
    if (positions.length === 0) return;
    const rows = await executeIn(
      tx,
      sql`INSERT INTO baton_batch_ledger (batch_id, queue, outcome, acked)
          VALUES (${batch.id}, ${batch.queue}, 'committed', ${sql.param([...positions])}::int[])
          ON CONFLICT (batch_id) DO UPDATE SET acked = baton_batch_ledger.acked || EXCLUDED.acked
          WHERE baton_batch_ledger.outcome = 'committed'
          RETURNING batch_id`,
    );
    if (rows.length === 0) {
      throw new ClaimLostError(
        `queue "${batch.queue}": batch ${batch.id} was recovered from consumer ${batch.consumer} before it committed`,
      );
    }
  }

  /** Positions of the batch that committed (whatever its outcome since); none when it has no row. */
  async acked(batchId: string): Promise<number[]> {
    const [row] = await this.#store.execute(
      sql`SELECT acked FROM baton_batch_ledger WHERE batch_id = ${batchId}`,
    );
    return row ? toIntegers(row['acked']) : [];
  }

  /**
   * Marks the batches 'recovered' (creating their rows when they have none) and returns the positions each
   * had committed. Once this returns, no late acknowledgement of these batches can commit.
   */
  async fence(queue: string, batchIds: readonly string[]): Promise<Map<string, number[]>> {
    if (batchIds.length === 0) return new Map();
    const rows = await this.#store.execute(sql`
      INSERT INTO baton_batch_ledger (batch_id, queue, outcome)
      SELECT unnest(${sql.param([...batchIds])}::text[]), ${queue}, 'recovered'
      ON CONFLICT (batch_id) DO UPDATE SET outcome = 'recovered'
      RETURNING batch_id, acked`);
    return new Map(rows.map((row) => [String(row['batch_id']), toIntegers(row['acked'])]));
  }

  /** How many distinct positions of these batches committed and were not recovered since. */
  async committedCount(batchIds: readonly string[]): Promise<number> {
    if (batchIds.length === 0) return 0;
    const [row] = await this.#store.execute(sql`
      SELECT coalesce(sum((SELECT count(DISTINCT a) FROM unnest(acked) AS a)), 0)::int AS n
      FROM baton_batch_ledger
      WHERE batch_id = ANY(${sql.param([...batchIds])}::text[]) AND outcome = 'committed'`);
    return Number(row?.['n'] ?? 0);
  }

  /** Deletes the queue's rows past the retention, except those of `live` batches (still claimed). */
  async sweep(queue: string, live: readonly string[]): Promise<void> {
    await this.#store.execute(sql`
      DELETE FROM baton_batch_ledger
      WHERE queue = ${queue} AND created_at < now() - make_interval(hours => ${RETENTION_HOURS})
        AND NOT (batch_id = ANY(${sql.param([...live])}::text[]))`);
  }
}

/** An int[] from the driver: an array (pg, PGlite) or its text form. */
function toIntegers(value: unknown): number[] {
  if (Array.isArray(value)) return value.map(Number);
  return typeof value === 'string' ? (value.match(/-?\d+/g) ?? []).map(Number) : [];
}

/**
 * The positions of `records` in their batch (what the ledger records). Acknowledging the whole batch, the
 * runner passes the batch's own array: then the positions are 0…n-1 without looking anything up.
 */
export function batchPositions(batch: ClaimedBatch, records: readonly ClaimedRecord[]): number[] {
  if (records === batch.records) return records.map((_, index) => index);
  const index = new Map(batch.records.map((record, position) => [record.id, position]));
  return records.map((record) => {
    const position = index.get(record.id);
    if (position === undefined) throw new TypeError(`record ${record.id} is not of batch ${batch.id}`);
    return position;
  });
}
