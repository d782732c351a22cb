-- Workflows: one row per execution, created by the rule engine on the primary in the fenced transaction that
-- also commits its listener offset, so a triggering event processed twice finds its execution already there:
-- (workflow, trigger_offset) is unique. `view` is the engine's event-ordered picture of the execution (the
-- state of each task's latest run, the runs still open, the parts of `all` conditions already met); it
-- changes only in the engine's transactions, with the offset of the events that changed it.
CREATE TABLE baton_workflow_executions (
  id text PRIMARY KEY,
  workflow text NOT NULL,
  namespace text NOT NULL,
  state text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'stopped', 'lost')),
  -- Offset and key of the event that started it (a trigger, a schedule's tick, `baton workflows start`).
  trigger_offset bigint NOT NULL,
  trigger_key text NOT NULL,
  view jsonb NOT NULL DEFAULT '{}',
  -- The term and node of the primary that created it.
  term bigint NOT NULL,
  node text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  ended_at timestamptz,
  error text,
  -- Set by `baton workflows stop`; the primary stops its runs and ends it `stopped`.
  stop_requested_at timestamptz,
  UNIQUE (workflow, trigger_offset)
);

CREATE INDEX baton_workflow_executions_created ON baton_workflow_executions (created_at DESC);
CREATE INDEX baton_workflow_executions_open ON baton_workflow_executions (workflow, created_at)
  WHERE state IN ('queued', 'running');

-- Task runs of an execution name it; what the engine does with one whose node died is decided when the run
-- is created (its task's on_lost).
ALTER TABLE baton_task_runs ADD COLUMN workflow text;
ALTER TABLE baton_task_runs ADD COLUMN execution text;
ALTER TABLE baton_task_runs ADD COLUMN restart_on_lost boolean NOT NULL DEFAULT false;

-- A run outside an execution stays unique per (task, rule, triggering offset, attempt). Inside one, per
-- (execution, task, triggering offset, attempt): one event starts a task of an execution at most once,
-- whichever of its rules fired.
ALTER TABLE baton_task_runs DROP CONSTRAINT baton_task_runs_task_rule_trigger_offset_attempt_key;
CREATE UNIQUE INDEX baton_task_runs_once ON baton_task_runs (task, rule, trigger_offset, attempt)
  WHERE execution IS NULL;
CREATE UNIQUE INDEX baton_task_runs_once_in_execution ON baton_task_runs (execution, task, trigger_offset, attempt)
  WHERE execution IS NOT NULL;
CREATE INDEX baton_task_runs_execution ON baton_task_runs (execution, created_at) WHERE execution IS NOT NULL;
