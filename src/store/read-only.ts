// Whether a PostgreSQL store takes writes. A hot standby (a server in recovery) or a server set to
// default_transaction_read_only answers reads but refuses every write, LISTEN included: a node on such a
// store defers what it writes at start until the store takes writes (see node.ts).
import { sql } from 'drizzle-orm';

import type { Store } from './store.js';

/** The SQLSTATE of a write refused by a read-only transaction or during recovery (read_only_sql_transaction). */
const READ_ONLY_SQLSTATE = '25006';

/** What a node says while its store is a standby: it waits for the server's promotion. */
export const STANDBY_REASON = 'the store is a standby in recovery: waiting for promotion';
const READ_ONLY_REASON =
  'the store is read-only (default_transaction_read_only is on): waiting until it takes writes';

/** Why the store takes no writes now, or undefined when it does (the embedded store always does). */
export async function readOnlyReason(store: Store): Promise<string | undefined> {
  if (store.kind !== 'postgres') return undefined;
  const [row] = await store.execute(
    sql`SELECT pg_is_in_recovery() AS recovery, current_setting('transaction_read_only') AS read_only`,
  );
  if (row?.['recovery'] === true) return STANDBY_REASON;
  if (row?.['read_only'] === 'on') return READ_ONLY_REASON;
  return undefined;
}

/** True when `error` (or one of its causes) is a write the database refused because it takes none now. */
export function isReadOnlyError(error: unknown): boolean {
  for (let current: unknown = error, depth = 0; current && depth < 5; depth++) {
    if (typeof current !== 'object') return false;
    const code = 'sqlState' in current ? current.sqlState : 'code' in current ? current.code : undefined;
    if (code === READ_ONLY_SQLSTATE) return true;
    current = 'cause' in current ? current.cause : undefined;
  }
  return false;
}
