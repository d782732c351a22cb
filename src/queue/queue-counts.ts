// Queue counts: the depth, in-flight and error figures of each queue kept in the store, without counting
// rows. Triggers of migration 0011 append one row to baton_queue_counts per statement and queue with what
// the statement changed; a queue's figures are the sums of its rows, and compaction folds them into one row
// from time to time, so that reading stays a few rows whatever the queue's size.
import { sql } from 'drizzle-orm';

import type { Store } from '../store/store.js';
import { executeIn } from '../store/store.js';
import type { QueueStats } from './backend.js';

/** The figures that the counts keep: all of QueueStats but the delayed records, which change with time. */
export type QueueCounts = Pick<QueueStats, 'depth' | 'inFlight' | 'errors' | 'deduplicated'>;

/** A read that finds more rows than this for a queue folds them (each is one statement's change). */
const COMPACT_AT_ROWS = 64;

/** The queue's figures, exact: the sums of its rows. Folds them when they have grown many. */
export async function readQueueCounts(store: Store, queue: string): Promise<QueueCounts> {
  const [row] = await store.execute(sql`
    SELECT coalesce(sum(depth), 0)::text AS depth, coalesce(sum(in_flight), 0)::text AS in_flight,
           coalesce(sum(errors), 0)::text AS errors, coalesce(sum(deduplicated), 0)::text AS deduplicated,
           count(*)::int AS parts
    FROM baton_queue_counts WHERE queue = ${queue}`);
  if (Number(row?.['parts'] ?? 0) > COMPACT_AT_ROWS) await compactQueueCounts(store, queue);
  return {
    depth: Number(row?.['depth'] ?? 0),
    inFlight: Number(row?.['in_flight'] ?? 0),
    errors: Number(row?.['errors'] ?? 0),
    // Only once some were: a queue that never saw an id reads as before.
    ...(Number(row?.['deduplicated'] ?? 0) > 0 ? { deduplicated: Number(row?.['deduplicated']) } : {}),
  };
}

/**
 * Folds the queue's rows into one. Under a lock per queue, taken without waiting: a compaction already
 * running elsewhere does the same work, and two deleting the same rows in another order could deadlock.
 */
export async function compactQueueCounts(store: Store, queue: string): Promise<void> {
  await store.transaction(async (tx) => {
    const [lock] = await executeIn(
      tx,
      sql`SELECT pg_try_advisory_xact_lock(hashtext(${`baton_queue_counts/${queue}`})) AS taken`,
    );
    if (lock?.['taken'] !== true) return;
    await executeIn(
      tx,
      sql`WITH folded AS (
            DELETE FROM baton_queue_counts WHERE queue = ${queue} RETURNING depth, in_flight, errors, deduplicated)
          INSERT INTO baton_queue_counts (queue, depth, in_flight, errors, deduplicated)
          SELECT ${queue}, sum(depth), sum(in_flight), sum(errors), sum(deduplicated) FROM folded
          HAVING sum(depth) <> 0 OR sum(in_flight) <> 0 OR sum(errors) <> 0 OR sum(deduplicated) <> 0`,
    );
  });
}
