-- Task runs: one row per run of a task, started by a rule on an event (or by a restart of a lost run).
-- The rule engine inserts a run as `pending` in the transaction that also commits its listener offset, so
-- an event processed twice (a failover between the effect and the next batch) finds its run already there:
-- (task, rule, trigger_offset, attempt) is unique. A run becomes `running` in a committed, fenced
-- transaction before its process is spawned, so it is started at most once.
CREATE TABLE baton_task_runs (
  id text PRIMARY KEY,
  task text NOT NULL,
  -- Position of the rule in [[rules]] that started the run.
  rule integer NOT NULL,
  -- Offset and key of the event that triggered the run.
  trigger_offset bigint NOT NULL,
  trigger_key text NOT NULL,
  -- 1 for the run a rule started; one more for each restart of a lost run.
  attempt integer NOT NULL DEFAULT 1,
  -- The lost run this one restarts.
  restart_of text UNIQUE,
  namespace text NOT NULL,
  state text NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'stopped', 'lost')),
  -- The node that ran it, and the term it ran under.
  node text,
  term bigint,
  pid integer,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  ended_at timestamptz,
  exit_code integer,
  error text,
  -- Set by a stop request (a rule, or `baton tasks stop`); the primary carries it out.
  stop_requested_at timestamptz,
  -- A lost run whose rule has on_lost = "restart" and that was not restarted yet.
  restart_pending boolean NOT NULL DEFAULT false,
  UNIQUE (task, rule, trigger_offset, attempt)
);

CREATE INDEX baton_task_runs_created ON baton_task_runs (created_at DESC);
CREATE INDEX baton_task_runs_open ON baton_task_runs (state) WHERE state IN ('pending', 'running');
