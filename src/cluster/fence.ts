// The fence: a row baton_fence(group_name, term) in the sink. A new primary raises it to its term before it
// acts, whatever the elector; a write that must come from the primary checks it inside its own transaction
// (assertPrimary), taking a share lock so that a newer primary's raise waits for that transaction and every
// later check of the deposed primary fails. So a late write of a deposed primary is refused, not applied.
import { sql } from 'drizzle-orm';

import { describeError, FencedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';
import { sleep } from '../util/sleep.js';

/**
 * Raises the group's fence to `term`. Resolves true when the fence is now at `term`; false when it is
 * already higher (a newer primary acted: this one must not).
 *
 * A deposed primary's transaction that checked the fence holds a share lock on its row until it ends, and
 * the raise waits for it. If that primary is paused (a GC pause, a stopped VM) or its connection went
 * silent (a partition), it would hold the failover for as long. A raise only happens when a node takes a new
 * term, so whatever blocks it belongs to an older term: the sessions blocking the raise are terminated as
 * soon as they show up (their transactions roll back, which is what fencing wants of them anyway).
 */
export async function raiseFence(
  store: Store,
  group: string,
  term: number,
  options: { log?: Logger } = {},
): Promise<boolean> {
  return store.transaction(async (tx) => {
    // A single-connection store (PGlite) has no other session that could block.
    const [self] = store.exclusive ? [] : await executeIn(tx, sql`SELECT pg_backend_pid() AS pid`);
    const stop = new AbortController();
    const breaking = self ? breakBlockers(store, Number(self['pid']), stop.signal, options.log) : undefined;
    try {
      const rows = await executeIn(
        tx,
        sql`
        INSERT INTO baton_fence (group_name, term) VALUES (${group}, ${term})
        ON CONFLICT (group_name) DO UPDATE SET term = EXCLUDED.term, raised_at = now()
          WHERE baton_fence.term <= EXCLUDED.term
        RETURNING term`,
      );
      return rows.length === 1;
    } finally {
      stop.abort();
      await breaking;
    }
  });
}

/**
 * When the sessions blocking a raise are first looked for: the INSERT must have started waiting on the row
 * for pg_blocking_pids to name them, and an unblocked raise (the usual case) is over by then.
 */
const FIRST_LOOK_AFTER_MS = 20;
/** How often they are looked for after that, while the raise still waits. */
const LOOK_EVERY_MS = 50;

/** Until `signal` aborts: terminates the sessions that block the session `pid`, looking every few ms. */
async function breakBlockers(
  store: Store,
  pid: number,
  signal: AbortSignal,
  log: Logger | undefined,
): Promise<void> {
  await sleep(FIRST_LOOK_AFTER_MS, signal);
  while (!signal.aborted) {
    try {
      const rows = await store.execute(sql`
        SELECT blocker, pg_terminate_backend(blocker) AS ended FROM unnest(pg_blocking_pids(${pid})) AS blocker`);
      if (rows.length > 0) {
        log?.warn(
          { sessions: rows.map((row) => Number(row['blocker'])) },
          'fence: ended the sessions of a deposed primary that held the fence',
        );
      }
    } catch (error) {
      log?.warn({ err: describeError(error) }, 'fence: could not end the sessions that hold the fence');
    }
    await sleep(LOOK_EVERY_MS, signal);
  }
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
