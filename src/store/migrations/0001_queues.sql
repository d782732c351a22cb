-- Queues kept in the sink database: records waiting or claimed, and the error queues.
CREATE TABLE baton_queue_records (
  id bigserial PRIMARY KEY,
  queue text NOT NULL,
  payload bytea NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  run_after timestamptz NOT NULL DEFAULT now(),
  enqueued_at timestamptz NOT NULL DEFAULT now(),
  claimed_by text,
  claimed_at timestamptz,
  last_error text
);
CREATE INDEX baton_queue_records_ready ON baton_queue_records (queue, id) WHERE claimed_by IS NULL;
CREATE INDEX baton_queue_records_claimed ON baton_queue_records (claimed_by) WHERE claimed_by IS NOT NULL;

CREATE TABLE baton_queue_errors (
  id bigserial PRIMARY KEY,
  queue text NOT NULL,
  payload bytea NOT NULL,
  attempts integer NOT NULL,
  error text NOT NULL,
  failed_at timestamptz NOT NULL DEFAULT now(),
  enqueued_at timestamptz NOT NULL
);
CREATE INDEX baton_queue_errors_queue ON baton_queue_errors (queue, id);
