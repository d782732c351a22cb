// The ticks of schedules in the store (baton_schedule_ticks, baton_schedule_state): a tick row is inserted
// in the fenced transaction that applies the tick, and the state row says up to which tick time every tick
// was decided (applied, or counted as missed). Any node and the CLI may read them; only the primary writes.
import { sql } from 'drizzle-orm';

import type { Row, Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';

/** Why a tick was applied: by the timer, by a new primary's catch-up, or by `baton schedules fire`. */
export type TickCause = 'on-time' | 'catch-up' | 'manual';

export interface TickRow {
  readonly schedule: string;
  /** The time the schedule named, ms since 1970. */
  readonly tick: number;
  readonly term: number;
  readonly node: string;
  readonly appliedAt: number;
  readonly latenessMs: number;
  readonly cause: TickCause;
}

export interface ScheduleState {
  readonly schedule: string;
  /** Every tick up to this time (ms) was applied or counted as missed. */
  readonly coveredUntil: number;
  readonly missed: number;
  /** The latest applied tick, if any. */
  readonly last: TickRow | undefined;
}

/**
 * Inside `tx` (fenced by the caller): records the tick; false when it was recorded already (it was applied:
 * the caller applies nothing).
 */
export async function insertTick(
  tx: Tx,
  tick: Omit<TickRow, 'appliedAt'>,
  options: { pushed: boolean },
): Promise<boolean> {
  const rows = await executeIn(
    tx,
    sql`
    INSERT INTO baton_schedule_ticks (schedule, tick_time, term, node, lateness_ms, cause, pushed)
    VALUES (${tick.schedule}, ${new Date(tick.tick).toISOString()}::timestamptz, ${tick.term}, ${tick.node},
            ${Math.max(0, Math.round(tick.latenessMs))}, ${tick.cause}, ${options.pushed})
    ON CONFLICT (schedule, tick_time) DO NOTHING RETURNING 1`,
  );
  return rows.length === 1;
}

/**
 * Inside `tx`: the state row of `schedule`, locked until `tx` ends (a catch-up decides on it), or undefined
 * for a schedule that never ran.
 */
export async function lockState(
  tx: Tx,
  schedule: string,
): Promise<{ coveredUntil: number; missed: number } | undefined> {
  const [row] = await executeIn(
    tx,
    sql`
    SELECT (extract(epoch FROM covered_until) * 1000)::float8 AS covered_ms, missed
    FROM baton_schedule_state WHERE schedule = ${schedule} FOR UPDATE`,
  );
  return row ? { coveredUntil: Number(row['covered_ms']), missed: Number(row['missed']) } : undefined;
}

/** Inside `tx`: moves the covered time of `schedule` forward to `untilMs` (never back) and adds `missed`. */
export async function advanceState(tx: Tx, schedule: string, untilMs: number, missed = 0): Promise<void> {
  const until = new Date(untilMs).toISOString();
  await executeIn(
    tx,
    sql`
    INSERT INTO baton_schedule_state AS s (schedule, covered_until, missed, last_missed_at)
    VALUES (${schedule}, ${until}::timestamptz, ${missed}, CASE WHEN ${missed} > 0 THEN now() END)
    ON CONFLICT (schedule) DO UPDATE SET
      covered_until = greatest(s.covered_until, EXCLUDED.covered_until),
      missed = s.missed + EXCLUDED.missed,
      last_missed_at = coalesce(EXCLUDED.last_missed_at, s.last_missed_at)`,
  );
}

/** The ticks of `schedule` whose Redis record is not confirmed pushed, oldest first, with their term. */
export async function unpushedTicks(
  store: Store,
  schedule: string,
): Promise<Array<{ tick: number; term: number }>> {
  const rows = await store.execute(sql`
    SELECT (extract(epoch FROM tick_time) * 1000)::float8 AS tick_ms, term FROM baton_schedule_ticks
    WHERE schedule = ${schedule} AND NOT pushed ORDER BY tick_time`);
  return rows.map((row) => ({ tick: Number(row['tick_ms']), term: Number(row['term']) }));
}

/** Records that the Redis record of a tick was pushed (by this node or before it: the push is idempotent). */
export async function markPushed(store: Store, schedule: string, tick: number): Promise<void> {
  await store.execute(sql`
    UPDATE baton_schedule_ticks SET pushed = true
    WHERE schedule = ${schedule} AND tick_time = ${new Date(tick).toISOString()}::timestamptz`);
}

const TICK_COLUMNS = sql.raw(`schedule, (extract(epoch FROM tick_time) * 1000)::float8 AS tick_ms, term, node,
  (extract(epoch FROM applied_at) * 1000)::float8 AS applied_ms, lateness_ms, cause`);

/** Every schedule the store knows (configured now or once), with its latest tick. */
export async function scheduleStates(store: Store): Promise<ScheduleState[]> {
  const rows = await store.execute(sql`
    SELECT s.schedule, (extract(epoch FROM s.covered_until) * 1000)::float8 AS covered_ms, s.missed,
           t.tick_ms, t.term, t.node, t.applied_ms, t.lateness_ms, t.cause
    FROM baton_schedule_state s
    LEFT JOIN LATERAL (
      SELECT ${TICK_COLUMNS} FROM baton_schedule_ticks
      WHERE schedule = s.schedule ORDER BY tick_time DESC LIMIT 1) t ON true
    ORDER BY s.schedule`);
  return rows.map((row) => ({
    schedule: String(row['schedule']),
    coveredUntil: Number(row['covered_ms']),
    missed: Number(row['missed']),
    last: row['tick_ms'] === null || row['tick_ms'] === undefined ? undefined : toTick(row),
  }));
}

/** The latest ticks of `schedule`, newest first. */
export async function listTicks(store: Store, schedule: string, limit = 100): Promise<TickRow[]> {
  const rows = await store.execute(sql`
    SELECT ${TICK_COLUMNS} FROM baton_schedule_ticks WHERE schedule = ${schedule}
    ORDER BY tick_time DESC LIMIT ${limit}`);
  return rows.map(toTick);
}

function toTick(row: Row): TickRow {
  const cause = String(row['cause']);
  return {
    schedule: String(row['schedule']),
    tick: Number(row['tick_ms']),
    term: Number(row['term']),
    node: String(row['node']),
    appliedAt: Number(row['applied_ms']),
    latenessMs: Number(row['lateness_ms']),
    cause: cause === 'catch-up' || cause === 'manual' ? cause : 'on-time',
  };
}
