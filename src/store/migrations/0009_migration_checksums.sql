-- The checksum (sha256 of the normalised text) of each applied migration, so that `migrate` refuses a file
-- changed after it was applied. Rows applied before this column existed get theirs at the next migrate.
ALTER TABLE baton_migrations ADD COLUMN IF NOT EXISTS checksum text;
