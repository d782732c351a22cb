-- Schedules: one row per applied tick, keyed by (schedule, tick_time). The primary inserts it in the same
-- fenced transaction as the tick's effect (a record enqueued, an event appended, a task run created), so a
-- tick whose row exists was applied, once; an insert that finds the row already there applies nothing.
CREATE TABLE baton_schedule_ticks (
  schedule text NOT NULL,
  -- The time the schedule named (not when it ran).
  tick_time timestamptz NOT NULL,
  -- The term of the primary that applied it, and that node's name.
  term bigint NOT NULL,
  node text NOT NULL,
  -- When it was applied (the database's clock), and how late after tick_time (the node's clock).
  applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  lateness_ms integer NOT NULL,
  -- 'on-time' (the timer), 'catch-up' (a new primary's missed tick), 'manual' (`baton schedules fire`).
  cause text NOT NULL CHECK (cause IN ('on-time', 'catch-up', 'manual')),
  -- A Redis queue target only: its record is pushed after this row commits, by an idempotent script keyed by
  -- (schedule, tick); false until the push is confirmed (a new primary pushes what is left).
  pushed boolean NOT NULL DEFAULT true,
  PRIMARY KEY (schedule, tick_time)
);

-- Per schedule: the tick time up to which every tick was decided (applied, or counted as missed), and how
-- many were missed. Changed in the same fenced transactions as the ticks.
CREATE INDEX baton_schedule_ticks_unpushed ON baton_schedule_ticks (schedule) WHERE NOT pushed;

CREATE TABLE baton_schedule_state (
  schedule text PRIMARY KEY,
  covered_until timestamptz NOT NULL,
  missed bigint NOT NULL DEFAULT 0,
  last_missed_at timestamptz
);
