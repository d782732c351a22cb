// Rate limits of queues (`rate_limit`, records per second across every node of the group), kept by the
// backend so that all consumers share them: the generic cell rate algorithm. A queue keeps one time, the
// theoretical arrival time (TAT) of its next record; a claim may take as many records as fit between that
// time and the end of the burst window from now, and moves the time on by 1/rate per record taken. The
// window is one second, or one record's interval when that is longer (a rate below one per second still
// lets one record through). Records not taken after all (the queue had fewer) are given back. Over any span
// of t seconds a queue thus runs at most rate × (t + 1) records, or one more than rate × t below 1/s: a
// burst of one window's worth, then the rate.
import { sql } from 'drizzle-orm';

import type { Store } from '../store/store.js';
import { executeIn } from '../store/store.js';

/** What a claim may take now: `granted` records, or none and how long until one is allowed. */
export interface RateGrant {
  readonly granted: number;
  /** Milliseconds until the next record is allowed, when none is now. */
  readonly waitMs: number;
}

export interface RateLimiter {
  /** Takes up to `want` records' worth of `queue`'s rate (`perSecond`) now. */
  reserve(queue: string, want: number, perSecond: number): Promise<RateGrant>;
  /** Gives back `count` records' worth not used after all. */
  refund(queue: string, count: number, perSecond: number): Promise<void>;
}

/** The rate limits of the store's queues: a row of baton_queue_rates per queue, locked while it changes. */
export class StoreRateLimiter implements RateLimiter {
  readonly #store: Store;

  constructor(store: Store) {
    this.#store = store;
  }

  reserve(queue: string, want: number, perSecond: number): Promise<RateGrant> {
    const window = sql`(${burstWindowMs(perSecond)}::float8 * interval '1 millisecond')`;
    return this.#store.transaction(async (tx) => {
      await executeIn(
        tx,
        sql`INSERT INTO baton_queue_rates (queue, tat) VALUES (${queue}, now()) ON CONFLICT (queue) DO NOTHING`,
      );
      const [row] = await executeIn(
        tx,
        sql`WITH current AS (
              SELECT greatest(tat, now()) AS tat FROM baton_queue_rates WHERE queue = ${queue} FOR UPDATE),
            grant_ AS (
              SELECT tat, greatest(0, least(${want}::int,
                       floor(extract(epoch FROM now() + ${window} - tat) * ${perSecond}::float8)))::int AS n
              FROM current)
            UPDATE baton_queue_rates AS r
            SET tat = g.tat + (g.n / ${perSecond}::float8) * interval '1 second'
            FROM grant_ AS g WHERE r.queue = ${queue}
            RETURNING g.n AS granted,
              ceil(extract(epoch FROM g.tat + (1 / ${perSecond}::float8) * interval '1 second'
                                      - now() - ${window}) * 1000)::float8 AS wait_ms`,
      );
      return grantOf(row?.['granted'], row?.['wait_ms']);
    });
  }

  async refund(queue: string, count: number, perSecond: number): Promise<void> {
    if (count <= 0) return;
    await this.#store.execute(sql`
      UPDATE baton_queue_rates
      SET tat = greatest(now(), tat - (${count} / ${perSecond}::float8) * interval '1 second')
      WHERE queue = ${queue}`);
  }
}

/** Milliseconds of the burst window at `perSecond`: one second, or one record's interval if longer. */
export function burstWindowMs(perSecond: number): number {
  return Math.max(1000, 1000 / perSecond);
}

/** A grant as the backends answer it (numbers, or their text). */
export function grantOf(granted: unknown, waitMs: unknown): RateGrant {
  const count = Math.max(0, Math.floor(Number(granted ?? 0)));
  return { granted: count, waitMs: count > 0 ? 0 : Math.max(1, Math.ceil(Number(waitMs ?? 0))) };
}
