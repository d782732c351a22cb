// Records added to a store queue inside a caller's transaction, so that they exist if and only if the
// caller's other writes commit (a schedule's tick row with its record). Other nodes' consumers are woken
// by a NOTIFY that PostgreSQL delivers at the commit; this process's by StoreQueueBackend.notify() after it.
import { sql } from 'drizzle-orm';

import { batonChannel } from '../store/baton-schema.js';
import type { Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';
import { WAKEUP_CHANNEL } from './store-queue.js';

/** Inside `tx`: appends `records` to the store queue `queue` of `store`; returns how many. */
export async function enqueueIn(
  tx: Tx,
  store: Store,
  queue: string,
  records: readonly Buffer[],
): Promise<number> {
  if (records.length === 0) return 0;
  // An exclusive store (PGlite) has no other process to wake.
  const notify = store.exclusive
    ? sql``
    : sql`, pg_notify(${batonChannel(store.schema, WAKEUP_CHANNEL)}, ${queue})`;
  await executeIn(
    tx,
    sql`
    WITH inserted AS (
      INSERT INTO baton_queue_records (queue, payload) SELECT ${queue}, unnest(${sql.param(records)}::bytea[])
      RETURNING 1)
    SELECT count(*) AS n${notify} FROM inserted`,
  );
  return records.length;
}
