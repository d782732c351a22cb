-- Queues at scale. Claims walk one index in claim order: ready records of a queue by (run_after, id), so
-- records waiting out a retry back-off are never read by a claim, whatever their number, and a claim costs
-- its batch, with or without statistics. Recovery finds a queue's claimed rows by an index of their own.
CREATE INDEX baton_queue_records_due ON baton_queue_records (queue, run_after, id) WHERE claimed_by IS NULL;
DROP INDEX baton_queue_records_ready;
CREATE INDEX baton_queue_records_held ON baton_queue_records (queue, claimed_by) WHERE claimed_by IS NOT NULL;
DROP INDEX baton_queue_records_claimed;

-- Queue depth without a scan: every statement that changes the records or the error queue appends one row
-- per queue with what it added to or took from each figure (statement-level triggers over the transition
-- tables: no row that concurrent writers share). Readers sum a queue's rows; compaction folds them into one.
CREATE TABLE baton_queue_counts (
  queue text NOT NULL,
  depth bigint NOT NULL DEFAULT 0,
  in_flight bigint NOT NULL DEFAULT 0,
  errors bigint NOT NULL DEFAULT 0
);
CREATE INDEX baton_queue_counts_queue ON baton_queue_counts (queue);

INSERT INTO baton_queue_counts (queue, depth, in_flight)
SELECT queue, count(*) FILTER (WHERE claimed_by IS NULL), count(*) FILTER (WHERE claimed_by IS NOT NULL)
FROM baton_queue_records GROUP BY queue;
INSERT INTO baton_queue_counts (queue, errors) SELECT queue, count(*) FROM baton_queue_errors GROUP BY queue;

CREATE FUNCTION baton_count_records_added() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO baton_queue_counts (queue, depth, in_flight)
  SELECT queue, count(*) FILTER (WHERE claimed_by IS NULL), count(*) FILTER (WHERE claimed_by IS NOT NULL)
  FROM added GROUP BY queue; RETURN NULL; END $$;

CREATE FUNCTION baton_count_records_removed() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO baton_queue_counts (queue, depth, in_flight)
  SELECT queue, -count(*) FILTER (WHERE claimed_by IS NULL), -count(*) FILTER (WHERE claimed_by IS NOT NULL)
  FROM removed GROUP BY queue; RETURN NULL; END $$;

CREATE FUNCTION baton_count_records_changed() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO baton_queue_counts (queue, depth, in_flight)
  SELECT queue, sum(depth), sum(in_flight)
  FROM (SELECT queue, CASE WHEN claimed_by IS NULL THEN 1 ELSE 0 END AS depth,
               CASE WHEN claimed_by IS NULL THEN 0 ELSE 1 END AS in_flight FROM added
        UNION ALL
        SELECT queue, CASE WHEN claimed_by IS NULL THEN -1 ELSE 0 END,
               CASE WHEN claimed_by IS NULL THEN 0 ELSE -1 END FROM removed) AS change
  GROUP BY queue HAVING sum(depth) <> 0 OR sum(in_flight) <> 0; RETURN NULL; END $$;

CREATE FUNCTION baton_count_errors_added() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO baton_queue_counts (queue, errors) SELECT queue, count(*) FROM added GROUP BY queue; RETURN NULL; END $$;

CREATE FUNCTION baton_count_errors_removed() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO baton_queue_counts (queue, errors) SELECT queue, -count(*) FROM removed GROUP BY queue; RETURN NULL; END $$;

-- The functions keep the search path of the migration (Baton's schema first), so that a statement from any
-- connection finds the counts. (A function's statements end mid-line: a semicolon at the end of a line ends a migration's statement.)
-- TRUNCATE has no transition table: what the table held is taken back from the counts.
CREATE FUNCTION baton_count_records_truncated() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO baton_queue_counts (queue, depth, in_flight)
  SELECT queue, -sum(depth), -sum(in_flight) FROM baton_queue_counts GROUP BY queue; RETURN NULL; END $$;

CREATE FUNCTION baton_count_errors_truncated() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO baton_queue_counts (queue, errors) SELECT queue, -sum(errors) FROM baton_queue_counts GROUP BY queue; RETURN NULL; END $$;

CREATE TRIGGER baton_count_insert AFTER INSERT ON baton_queue_records
  REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION baton_count_records_added();
CREATE TRIGGER baton_count_delete AFTER DELETE ON baton_queue_records
  REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION baton_count_records_removed();
CREATE TRIGGER baton_count_update AFTER UPDATE ON baton_queue_records
  REFERENCING OLD TABLE AS removed NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION baton_count_records_changed();
CREATE TRIGGER baton_count_truncate AFTER TRUNCATE ON baton_queue_records
  FOR EACH STATEMENT EXECUTE FUNCTION baton_count_records_truncated();
CREATE TRIGGER baton_count_insert AFTER INSERT ON baton_queue_errors
  REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION baton_count_errors_added();
CREATE TRIGGER baton_count_delete AFTER DELETE ON baton_queue_errors
  REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION baton_count_errors_removed();
CREATE TRIGGER baton_count_truncate AFTER TRUNCATE ON baton_queue_errors
  FOR EACH STATEMENT EXECUTE FUNCTION baton_count_errors_truncated();

-- The queue tables churn: every record is inserted, updated when claimed and deleted. Where autovacuum
-- runs, it visits them after a small share of dead rows rather than the default fifth of the table.
ALTER TABLE baton_queue_records SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE baton_queue_counts SET (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE baton_batch_ledger SET (autovacuum_vacuum_scale_factor = 0.05);
