// The handler of the schedules benchmark's delayed records: each record is `{"id": N, "run_at": "<ISO>"}`,
// inserted into `bench_delayed` with the database's clock at the insert (`clock_timestamp()`), the clock
// that decides when a store queue's record is due. No unique constraint: a record run twice shows as two
// rows (count(*) against count(DISTINCT id)) instead of failing.
import { sql } from 'drizzle-orm';
import { bigserial, integer, pgTable, timestamp } from 'drizzle-orm/pg-core';

import type { Tx } from '../../src/index.js';

export const benchDelayed = pgTable('bench_delayed', {
  row: bigserial('row', { mode: 'number' }).primaryKey(),
  id: integer('id').notNull(),
  runAt: timestamp('run_at', { withTimezone: true, precision: 3 }).notNull(),
  ranAt: timestamp('ran_at', { withTimezone: true }).notNull(),
});
export const schema = { benchDelayed };

export async function processBatch(tx: Tx, records: readonly Buffer[]): Promise<void> {
  const ids: number[] = [];
  const runAts: string[] = [];
  for (const record of records) {
    const value = JSON.parse(record.toString('utf8')) as { id: number; run_at: string };
    ids.push(value.id);
    runAts.push(value.run_at);
  }
  await tx.execute(
    sql`INSERT INTO bench_delayed (id, run_at, ran_at)
        SELECT id, run_at, clock_timestamp()
        FROM unnest(${sql.param(ids)}::int[], ${sql.param(runAts)}::timestamptz[]) AS r(id, run_at)`,
  );
}
