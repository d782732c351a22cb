// Claims of a store queue with ordering = "key", by baton_claim_keyed() (migration 0016). With one claim per
// key (key_concurrency 1), a key's records are claimed from its head (lowest id) only: a key whose head is
// claimed (a batch holds it) or not due (a retry back-off, a delay) gives nothing, so its records run one batch
// at a time and in id order, and a failed record holds back those after it. With key_concurrency N above 1, a
// key gives its first unclaimed, due records while fewer than N claims hold records of it (counted from its
// claimed records, index baton_queue_records_key_held). Keys take turns: a claim walks the keys in turn order
// (index baton_queue_keys_turn), locking each (SKIP LOCKED: two claims never read one key at once), takes up
// to half a batch from each (all of it from a key alone with work) and stops once the batch is full or it
// visited 2 × batch + 8 keys; the keys it visited go to the back, those that gave nothing too, so that held,
// waiting or throttled keys at the front cannot fill every walk. A key's rate (key_rate_limit) is checked in
// the walk: a key keeps the theoretical arrival time of its next record (tat) and gives at most what its
// burst window allows now (as rate-limit.ts does for a queue). Records given back later are not refunded,
// so the limit is an upper bound; a drained key's row is removed, and its tat with it, so that its next record
// is allowed at once (within the window's worth a key may take at once anyway).
//
// Each key's records are read by a statement of the function taken after the key is locked, whose snapshot
// sees every claim of the key that committed before: a key row locked in a version newer than the claim's
// first snapshot (another claim took it and committed meanwhile) is thus read as it is, never as it was, so
// two claims cannot take the same records (a single statement would have to skip such keys).
import type { SQL } from 'drizzle-orm';
import { sql } from 'drizzle-orm';

import type { Store } from '../store/store.js';
import { executeIn } from '../store/store.js';
import type { QueueSettings } from './backend.js';
import { RECOVERED_REASON } from './backend.js';
import { burstWindowMs } from './rate-limit.js';

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
  { batchId, settings }: { batchId: string | undefined; settings: QueueSettings },
): SQL {
  const rate = settings.keyRateLimit;
  return sql`
    SELECT * FROM baton_claim_keyed(${queue}, ${consumer}, ${max}::integer, ${batchId ?? null}::text,
      ${settings.keyConcurrency ?? 1}::integer, ${rate ?? null}::float8,
      ${rate === undefined ? 1000 : burstWindowMs(rate)}::float8, ${RECOVERED_REASON}::text)`;
}

/**
 * Deletes the key rows of `keys` that hold no record. In a transaction of its own, after the claim that found
 * them empty: the rows are locked first (skipping those a writer holds: it is adding records to them), and
 * only then looked at again, by a statement whose snapshot sees every record committed before the locks. A
 * key's records are looked for as baton_claim_keyed() does (migration 0016): by the key index's order alone,
 * whatever the statistics say of the keys.
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
            AND NOT EXISTS (
              SELECT 1 FROM baton_queue_records r
              WHERE r.queue = ${queue} AND (r.key, r.id) > (k.key, 0) AND r.key <= k.key
              ORDER BY r.key, r.id LIMIT 1)`,
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
