// Claims of a store queue with ordering = "key". A key's records are claimed from its head (lowest id) only:
// a key whose head is claimed (a batch holds it) or not due (it waits out a retry back-off, or a delay) gives
// nothing, so its records run one batch at a time and in id order, and a failed record holds back those after
// it. Keys take turns: a claim reads the keys with the oldest turns, takes their first records round by round
// (every key's first record, then every key's second, …) and moves the keys it took to the back. The key rows
// are locked while a claim reads them (SKIP LOCKED), so that two claims never take the same key at once. A
// key row locked in its newest version may have been claimed by a claim that committed after this one's
// snapshot (its turn moved): the records read then would not show that claim, so such a key is skipped
// (`fresh`: the turn locked is the turn the snapshot reads).
import type { SQL } from 'drizzle-orm';
import { sql } from 'drizzle-orm';

import type { Store } from '../store/store.js';
import { executeIn } from '../store/store.js';
import type { QueueSettings } from './backend.js';
import { claimAssignment, orphanedFlag } from './queue-tables.js';

/**
 * The claim of up to `max` records of an ordered queue for `consumer`: keyed records by key as above, then
 * unkeyed ones (by the due index) up to `max`; with `batchId` (a ledger), written on the rows. Besides the
 * claimed rows (`empty` false), it returns one row per key it read that holds no record any more (`empty`
 * true, `key` set): removeEmptyKeys() deletes them.
 */
export function claimKeyedStatement(
  queue: string,
  consumer: string,
  max: number,
  { batchId }: { batchId: string | undefined },
): SQL {
  return sql`
    WITH picked AS (
      SELECT key, turn FROM baton_queue_keys WHERE queue = ${queue}
      ORDER BY turn LIMIT ${max} FOR UPDATE SKIP LOCKED),
    fresh AS (
      SELECT p.key, p.turn FROM picked p
      WHERE p.turn = (SELECT s.turn FROM baton_queue_keys s WHERE s.queue = ${queue} AND s.key = p.key)),
    share AS (SELECT greatest(1, ceil(${max}::float8 / greatest(count(*), 1)))::int AS per FROM picked),
    heads AS (
      SELECT p.key, p.turn, r.id, r.n, r.ok
      FROM fresh p CROSS JOIN share
      CROSS JOIN LATERAL (
        SELECT x.id, row_number() OVER (ORDER BY x.id) AS n,
               bool_and(x.claimed_by IS NULL AND x.run_after <= now()) OVER (ORDER BY x.id) AS ok
        FROM (SELECT id, claimed_by, run_after FROM baton_queue_records
              WHERE queue = ${queue} AND key = p.key ORDER BY id LIMIT share.per) AS x) AS r),
    chosen AS (SELECT id, key FROM heads WHERE ok ORDER BY n, turn LIMIT ${max}),
    loose AS (
      SELECT id FROM baton_queue_records
      WHERE queue = ${queue} AND claimed_by IS NULL AND key IS NULL AND run_after <= now()
      ORDER BY run_after, id LIMIT greatest(0, ${max} - (SELECT count(*) FROM chosen))
      FOR UPDATE SKIP LOCKED),
    turned AS (
      UPDATE baton_queue_keys SET turn = nextval('baton_queue_key_turns')
      WHERE queue = ${queue} AND key IN (SELECT key FROM chosen)),
    claimed AS (
      UPDATE baton_queue_records SET ${claimAssignment(consumer, batchId)}
      WHERE id = ANY(ARRAY(SELECT id FROM chosen UNION ALL SELECT id FROM loose))
      RETURNING id::text AS id, payload, attempts, enqueued_at, key, ${orphanedFlag(batchId)} AS orphaned,
                false AS empty)
    SELECT * FROM claimed
    UNION ALL
    SELECT NULL::text, NULL::bytea, NULL::integer, NULL::timestamptz, p.key, false, true
    FROM fresh p WHERE NOT EXISTS (SELECT 1 FROM heads h WHERE h.key = p.key)`;
}

/**
 * Deletes the key rows of `keys` that hold no record. In a transaction of its own, after the claim that found
 * them empty: the rows are locked first (skipping those a writer holds: it is adding records to them), and
 * only then looked at again, by a statement whose snapshot sees every record committed before the locks.
 */
export async function removeEmptyKeys(store: Store, queue: string, keys: readonly string[]): Promise<void> {
  if (keys.length === 0) return;
  await store.transaction(async (tx) => {
    const locked = await executeIn(
      tx,
      sql`SELECT key FROM baton_queue_keys WHERE queue = ${queue} AND key = ANY(${sql.param([...keys])}::text[])
          FOR UPDATE SKIP LOCKED`,
    );
    if (locked.length === 0) return;
    await executeIn(
      tx,
      sql`DELETE FROM baton_queue_keys k
          WHERE k.queue = ${queue} AND k.key = ANY(${sql.param(locked.map((row) => String(row['key'])))}::text[])
            AND NOT EXISTS (SELECT 1 FROM baton_queue_records r WHERE r.queue = ${queue} AND r.key = k.key)`,
    );
  });
}

/**
 * Writes the queue's settings where writers without a node (the outbox) read them. A queue that is not
 * ordered (any more) keeps no keys: records still keyed from when it was become plain records.
 */
export async function saveQueueSettings(store: Store, queue: string, settings: QueueSettings): Promise<void> {
  await store.transaction(async (tx) => {
    await executeIn(
      tx,
      sql`INSERT INTO baton_queue_settings (queue, ordering, dedup_window_ms)
          VALUES (${queue}, ${settings.ordering}, ${settings.dedupWindowMs})
          ON CONFLICT (queue) DO UPDATE SET ordering = excluded.ordering, dedup_window_ms = excluded.dedup_window_ms
          WHERE (baton_queue_settings.ordering, baton_queue_settings.dedup_window_ms)
                IS DISTINCT FROM (excluded.ordering, excluded.dedup_window_ms)`,
    );
    if (settings.ordering === 'key') return;
    await executeIn(
      tx,
      sql`UPDATE baton_queue_records SET key = NULL WHERE queue = ${queue} AND key IS NOT NULL`,
    );
    await executeIn(tx, sql`DELETE FROM baton_queue_keys WHERE queue = ${queue}`);
  });
}
