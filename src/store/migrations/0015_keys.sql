-- Keys and idempotency ids. A record of a queue with ordering = "key" keeps its key; its key has a row in
-- baton_queue_keys while records of it wait, whose turn orders the keys for fair claims (a claimed key goes
-- to the back). Keyed records are claimed by key (the first records of each key, in id order), never through
-- the due index, which now holds unkeyed records only: a key with a million records waiting costs a claim
-- nothing more than its share of the batch.
ALTER TABLE baton_queue_records ADD COLUMN key text;
ALTER TABLE baton_queue_errors ADD COLUMN key text;
DROP INDEX baton_queue_records_due;
CREATE INDEX baton_queue_records_due ON baton_queue_records (queue, run_after, id) WHERE claimed_by IS NULL AND key IS NULL;
CREATE INDEX baton_queue_records_key ON baton_queue_records (queue, key, id) WHERE key IS NOT NULL;

CREATE SEQUENCE baton_queue_key_turns;
CREATE TABLE baton_queue_keys (
  queue text NOT NULL,
  key text NOT NULL,
  turn bigint NOT NULL DEFAULT nextval('baton_queue_key_turns'),
  PRIMARY KEY (queue, key)
);
CREATE INDEX baton_queue_keys_turn ON baton_queue_keys (queue, turn);

-- Idempotency ids seen, until they expire: a record whose id is here, unexpired, is dropped at its insert.
CREATE TABLE baton_queue_dedup (
  queue text NOT NULL,
  id text NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (queue, id)
);
CREATE INDEX baton_queue_dedup_expiry ON baton_queue_dedup (queue, expires_at);

-- What the nodes' config says of each queue, for writers without a node (the outbox): whether it keeps keys,
-- and how long its ids are remembered. Written by the nodes that consume the queue.
CREATE TABLE baton_queue_settings (
  queue text PRIMARY KEY,
  ordering text NOT NULL,
  dedup_window_ms bigint NOT NULL
);

-- Records dropped as duplicates, counted as the other figures are (one row per statement, folded later).
ALTER TABLE baton_queue_counts ADD COLUMN deduplicated bigint NOT NULL DEFAULT 0;

ALTER TABLE baton_queue_keys SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
ALTER TABLE baton_queue_dedup SET (autovacuum_vacuum_scale_factor = 0.05);

-- Rate limits across nodes (`rate_limit`): the theoretical arrival time of the queue's next record (GCRA);
-- a claim may take the records whose time falls within the next second.
CREATE TABLE baton_queue_rates (
  queue text PRIMARY KEY,
  tat timestamptz NOT NULL
);
