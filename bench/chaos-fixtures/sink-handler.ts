// The handler of the chaos run's record queues: each record is an id as text ("r17", "p42"), or for a
// delayed record the id and the time it was published to run at ("d7 2026-12-06T05:00:01.234Z"). It is
// inserted into `chaos_sink` with no unique constraint, so that a record applied twice shows as a duplicate
// (count(*) against count(DISTINCT id)) instead of failing, together with that run_at and the time it ran by
// the database's clock (clock_timestamp(), taken after the claim), so that a record run early shows.
import { sql } from 'drizzle-orm';
import { bigserial, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

import type { Tx } from '../../src/index.js';

export const chaosSink = pgTable('chaos_sink', {
  row: bigserial('row', { mode: 'number' }).primaryKey(),
  id: text('id').notNull(),
  runAt: timestamp('run_at', { withTimezone: true, mode: 'date' }),
  ranAt: timestamp('ran_at', { withTimezone: true, mode: 'date' }).notNull(),
});
export const schema = { chaosSink };

export async function processBatch(tx: Tx, records: readonly Buffer[]): Promise<void> {
  const fields = records.map((record) => record.toString('utf8').split(' '));
  const ids = fields.map(([id]) => id ?? '');
  const runAts = fields.map(([, runAt]) => runAt ?? null);
  await tx.execute(
    sql`INSERT INTO chaos_sink (id, run_at, ran_at)
        SELECT id, run_at, clock_timestamp()
          FROM unnest(${sql.param(ids)}::text[], ${sql.param(runAts)}::timestamptz[]) AS r (id, run_at)`,
  );
}
