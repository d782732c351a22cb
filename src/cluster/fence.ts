// The fence: a row baton_fence(group_name, term) in the sink. A new primary raises it to its term before it
// acts, whatever the elector; a write that must come from the primary checks it inside its own transaction
// (assertPrimary), taking a share lock so that a newer primary's raise waits for that transaction and every
// later check of the deposed primary fails. So a late write of a deposed primary is refused, not applied.
import { sql } from 'drizzle-orm';

import { FencedError } from '../errors.js';
import type { Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';

/**
 * Raises the group's fence to `term`. Resolves true when the fence is now at `term`; false when it is
 * already higher (a newer primary acted: this one must not).
 */
export async function raiseFence(store: Store, group: string, term: number): Promise<boolean> {
  const rows = await store.execute(sql`
    INSERT INTO baton_fence (group_name, term) VALUES (${group}, ${term})
    ON CONFLICT (group_name) DO UPDATE SET term = EXCLUDED.term, raised_at = now()
      WHERE baton_fence.term <= EXCLUDED.term
    RETURNING term`);
  return rows.length === 1;
}

/** The group's fence, or 0 when none was raised yet. */
export async function currentFence(store: Store, group: string): Promise<number> {
  const [row] = await store.execute(sql`SELECT term FROM baton_fence WHERE group_name = ${group}`);
  return row ? Number(row['term']) : 0;
}

/** Inside `tx`: throws FencedError unless the group's fence is still at `term`. */
export async function assertFence(tx: Tx, group: string, term: number): Promise<void> {
  const [row] = await executeIn(tx, sql`SELECT term FROM baton_fence WHERE group_name = ${group} FOR SHARE`);
  const current = row ? Number(row['term']) : undefined;
  if (current !== term) throw new FencedError(term, current);
}
