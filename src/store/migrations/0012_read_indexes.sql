-- Reads of one namespace in offset order (a listener of a namespace, a rare namespace's events, a bounded
-- count of a namespace listener's events behind) walk this index from the offset they start at, instead of
-- walking the whole log by offset and filtering. Built while the migration holds its lock: on a large log,
-- appends wait for it (about a second per million events).
CREATE INDEX baton_events_namespace_offset ON baton_events (namespace, "offset");

-- Retention deletes the task runs that ended longest ago, a batch at a time.
CREATE INDEX baton_task_runs_ended ON baton_task_runs (ended_at) WHERE ended_at IS NOT NULL;
