-- A batch acknowledged whole is written to the ledger with acked = NULL instead of the list of all its
-- positions. Rows fenced by recovery keep the default '{}' (nothing acknowledged).
ALTER TABLE baton_batch_ledger ALTER COLUMN acked DROP NOT NULL;
