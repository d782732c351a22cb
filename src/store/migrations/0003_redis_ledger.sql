-- Batches of Redis queues: a batch's acknowledgement is written here in the handler's own transaction
-- ('committed', with the positions acknowledged), and claim recovery marks it 'recovered' before giving the
-- rest of the batch back, so that a consumer thought dead cannot commit it afterwards.
CREATE TABLE baton_redis_ledger (
  batch_id text PRIMARY KEY,
  queue text NOT NULL,
  outcome text NOT NULL,
  acked integer[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX baton_redis_ledger_created ON baton_redis_ledger (queue, created_at);
