-- The ledger of 0003 now serves PostgreSQL queues in another database than the sink as well as Redis
-- queues, so it loses the Redis in its name. Claims of such queues write their batch id on their rows, so
-- that recovery can find each batch's ledger row and the positions it acknowledged.
ALTER TABLE baton_redis_ledger RENAME TO baton_batch_ledger;
ALTER INDEX baton_redis_ledger_pkey RENAME TO baton_batch_ledger_pkey;
ALTER INDEX baton_redis_ledger_created RENAME TO baton_batch_ledger_created;
ALTER TABLE baton_queue_records ADD COLUMN batch_id text;
-- Partial: rows of queues in the sink never have a batch id, so they cost this index nothing.
CREATE INDEX baton_queue_records_batch ON baton_queue_records (batch_id) WHERE batch_id IS NOT NULL;
