// The batch ledger (`baton_batch_ledger` in the sink): for queues whose records cannot be deleted in the
// handler's own transaction (Redis lists, PostgreSQL queues in another database), that transaction writes the
// batch's id and the positions it acknowledged instead (NULL: the whole batch). Claim recovery marks the row
// 'recovered' before it gives anything back, so a consumer thought dead cannot commit the batch afterwards (a
// row lock orders the two).
import { sql } from 'drizzle-orm';

import type { Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';
import type { ClaimedBatch, ClaimedRecord } from './backend.js';
import { PRUNE_BATCH } from './queue-upkeep.js';
import { ClaimLostError } from '../errors.js';

/** What a batch's ledger row says was acknowledged: every record of the batch, or these positions. */
export type Acked = 'all' | readonly number[];

/** Rows of settled batches are kept this long (they fence a consumer that might still try to commit). */
const RETENTION_HOURS = 24;
/** Rows one sweep deletes at most. */
const SWEEP_MAX_ROWS = 50_000;

export class BatchLedger {
  readonly #store: Store;

  /** `store`: the sink, with Baton's migrations applied. */
  constructor(store: Store) {
    this.#store = store;
  }

  /**
   * Inside the handler's transaction: records `positions` of the batch as committed ('all': the whole batch,
   * written as NULL, without a position list). ClaimLostError when the batch was recovered meanwhile, so that
   * the transaction rolls back instead of applying records twice.
   */
  async acknowledge(tx: Tx, batch: ClaimedBatch, positions: Acked): Promise<void> {
    if (positions !== 'all' && positions.length === 0) return;
    const acked = positions === 'all' ? sql`NULL` : sql`${sql.param([...positions])}::int[]`;
    // NULL (every position) absorbs whatever the row held before.
    const union =
      positions === 'all'
        ? sql`NULL`
        : sql`CASE WHEN baton_batch_ledger.acked IS NULL THEN NULL ELSE baton_batch_ledger.acked || EXCLUDED.acked END`;
    const rows = await executeIn(
      tx,
      sql`INSERT INTO baton_batch_ledger (batch_id, queue, outcome, acked)
          VALUES (${batch.id}, ${batch.queue}, 'committed', ${acked})
          ON CONFLICT (batch_id) DO UPDATE SET acked = ${union}
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
  async acked(batchId: string): Promise<Acked> {
    const [row] = await this.#store.execute(
      sql`SELECT acked FROM baton_batch_ledger WHERE batch_id = ${batchId}`,
    );
    return row ? toAcked(row['acked']) : [];
  }

  /**
   * Marks the batches 'recovered' (creating their rows when they have none) and returns the positions each
   * had committed. Once this returns, no late acknowledgement of these batches can commit.
   */
  async fence(queue: string, batchIds: readonly string[]): Promise<Map<string, Acked>> {
    if (batchIds.length === 0) return new Map();
    const rows = await this.#store.execute(sql`
      INSERT INTO baton_batch_ledger (batch_id, queue, outcome)
      SELECT unnest(${sql.param([...batchIds])}::text[]), ${queue}, 'recovered'
      ON CONFLICT (batch_id) DO UPDATE SET outcome = 'recovered'
      RETURNING batch_id, acked`);
    return new Map(rows.map((row) => [String(row['batch_id']), toAcked(row['acked'])]));
  }

  /**
   * How many records of each batch committed and were not recovered since. `sizes`: batch id → the records
   * it holds, which is the count of a batch acknowledged whole.
   */
  async committedCount(sizes: ReadonlyMap<string, number>): Promise<number> {
    if (sizes.size === 0) return 0;
    const rows = await this.#store.execute(sql`
      SELECT batch_id, acked IS NULL AS whole, (SELECT count(DISTINCT a) FROM unnest(acked) AS a)::int AS n
      FROM baton_batch_ledger
      WHERE batch_id = ANY(${sql.param([...sizes.keys()])}::text[]) AND outcome = 'committed'`);
    let committed = 0;
    for (const row of rows) {
      committed += row['whole'] === true ? (sizes.get(String(row['batch_id'])) ?? 0) : Number(row['n']);
    }
    return committed;
  }

  /**
   * Deletes the queue's rows past the retention, except those of `live` batches (still claimed), in
   * statements of PRUNE_BATCH rows, at most SWEEP_MAX_ROWS in one sweep (the next sweep takes the rest).
   */
  async sweep(queue: string, live: readonly string[]): Promise<number> {
    let swept = 0;
    while (swept < SWEEP_MAX_ROWS) {
      const rows = await this.#store.execute(sql`
        DELETE FROM baton_batch_ledger WHERE batch_id IN (
          SELECT batch_id FROM baton_batch_ledger
          WHERE queue = ${queue} AND created_at < now() - make_interval(hours => ${RETENTION_HOURS})
            AND NOT (batch_id = ANY(${sql.param([...live])}::text[]))
          LIMIT ${PRUNE_BATCH})
        RETURNING 1`);
      swept += rows.length;
      if (rows.length < PRUNE_BATCH) break;
    }
    return swept;
  }
}

/** The acked column from the driver: NULL (the whole batch), an array (pg, PGlite) or its text form. */
function toAcked(value: unknown): Acked {
  if (value === null) return 'all';
  if (Array.isArray(value)) return value.map(Number);
  return typeof value === 'string' ? (value.match(/-?\d+/g) ?? []).map(Number) : [];
}

/**
 * What acknowledging `records` writes to the ledger: 'all' for the whole batch (the runner passes the batch's
 * own array), else their positions.
 */
export function batchPositions(batch: ClaimedBatch, records: readonly ClaimedRecord[]): Acked {
  if (records === batch.records) return 'all';
  const positions = records.map((record) => {
    if (batch.records[record.position]?.id !== record.id)
      throw new TypeError(`record ${record.id} is not of batch ${batch.id}`);
    return record.position;
  });
  return new Set(positions).size === batch.records.length ? 'all' : positions;
}

/** Whether the record at `position` is among `acked`. */
export function isAcked(acked: Acked, position: number): boolean {
  return acked === 'all' || acked.includes(position);
}
