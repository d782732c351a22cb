// Upkeep of the queue tables in a store, run by claim recovery at most every few seconds per queue: folds
// the queue's counts, forgets consumers long gone, vacuums the records table once its dead rows outnumber
// its live ones (a drained backlog leaves its index entries at the head of the index that claims walk), and
// analyzes it when it changed by as much as it held at the last ANALYZE, so that the planner's figures follow
// a backlog that grew or drained; it also forgets idempotency ids past their dedup window. PostgreSQL's
// autovacuum may be off, and the embedded store has none.
import { sql } from 'drizzle-orm';

import type { Store } from '../store/store.js';
import { compactQueueCounts } from './queue-counts.js';

/** How often a queue's upkeep runs, at most. */
export const UPKEEP_INTERVAL_MS = 10_000;
/** A consumer not seen for this long is forgotten (its claims were recovered long before). */
const FORGOTTEN_CONSUMER_HOURS = 1;
/** Rows deleted per statement of a prune. */
export const PRUNE_BATCH = 5_000;
/** The records table is vacuumed once it has this many dead rows at least, and more than live ones. */
const VACUUM_MIN_DEAD = 50_000;
/** The records table is analyzed once it changed by this many rows at least, and by as many as it held. */
const ANALYZE_MIN_CHANGES = 10_000;
/** The statistics target of the upkeep's ANALYZE (PostgreSQL's default is 100). */
const ANALYZE_TARGET = 10;

export async function keepUpQueue(store: Store, queue: string, options: { shared: boolean }): Promise<void> {
  await compactQueueCounts(store, queue);
  if (options.shared) {
    await store.execute(sql`
      DELETE FROM baton_consumers WHERE id IN (
        SELECT id FROM baton_consumers
        WHERE last_seen < now() - make_interval(hours => ${FORGOTTEN_CONSUMER_HOURS}) LIMIT ${PRUNE_BATCH})`);
  }
  // Idempotency ids past their window: a record with one of them would be stored anyway (the insert replaces
  // an expired id), so this only bounds the table.
  await store.execute(sql`
    DELETE FROM baton_queue_dedup WHERE (queue, id) IN (
      SELECT queue, id FROM baton_queue_dedup WHERE queue = ${queue} AND expires_at < now() LIMIT ${PRUNE_BATCH})`);
  if (!(await vacuumWhenDead(store, 'baton_queue_records')))
    await analyzeWhenChanged(store, 'baton_queue_records');
  // Keys churn as records of new keys come and go; ids as they expire.
  await vacuumWhenDead(store, 'baton_queue_keys');
  await vacuumWhenDead(store, 'baton_queue_dedup');
}

/**
 * VACUUM (then ANALYZE) of `table` once its dead rows reach VACUUM_MIN_DEAD and outnumber its live ones: as a
 * backlog drains, that happens a few times (each time the rest has halved), so the work stays in proportion
 * to the rows drained. Autovacuum, where it runs, usually comes first and resets the count.
 */
export async function vacuumWhenDead(store: Store, table: string): Promise<boolean> {
  const [row] = await store.execute(sql`
    SELECT n_dead_tup AS dead, n_live_tup AS live FROM pg_stat_user_tables WHERE relid = to_regclass(${table})`);
  if (!row) return false;
  if (Number(row['dead']) < Math.max(VACUUM_MIN_DEAD, Number(row['live']))) return false;
  await store.execute(sql`VACUUM ${sql.identifier(table)}`);
  await analyze(store, table);
  return true;
}

/**
 * ANALYZE of `table` (one of Baton's) once the changes since its last analysis reach what it held then.
 * ANALYZE reads a sample of fixed size (3 000 rows here), so it costs the same at any table size.
 */
export async function analyzeWhenChanged(store: Store, table: string): Promise<boolean> {
  const [row] = await store.execute(sql`
    SELECT s.n_mod_since_analyze AS changed, greatest(c.reltuples, 0) AS held
    FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid
    WHERE s.relid = to_regclass(${table})`);
  if (!row) return false;
  const changed = Number(row['changed']);
  if (changed < Math.max(ANALYZE_MIN_CHANGES, Number(row['held']))) return false;
  await analyze(store, table);
  return true;
}

/**
 * ANALYZE of `table` from a small sample (300 × ANALYZE_TARGET rows): the claims' plans need its size and
 * little else, and on the embedded store the ANALYZE holds the node's thread (about 60–90 ms for a 1M-row
 * table at the default target of 100, 35 ms at 10).
 */
async function analyze(store: Store, table: string): Promise<void> {
  await store.transaction(async (tx) => {
    await tx.execute(sql.raw(`SET LOCAL default_statistics_target = ${ANALYZE_TARGET}`));
    await tx.execute(sql`ANALYZE ${sql.identifier(table)}`);
  });
}
