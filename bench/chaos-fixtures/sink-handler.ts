// The handler of the chaos run's two queues: each record is an id as text ("r17", "p42"), inserted into
// `chaos_sink` with no unique constraint, so that a record applied twice shows as a duplicate
// (count(*) against count(DISTINCT id)) instead of failing.
import { sql } from 'drizzle-orm';
import { bigserial, pgTable, text } from 'drizzle-orm/pg-core';

import type { Tx } from '../../src/index.js';

export const chaosSink = pgTable('chaos_sink', {
  row: bigserial('row', { mode: 'number' }).primaryKey(),
  id: text('id').notNull(),
});
export const schema = { chaosSink };

export async function processBatch(tx: Tx, records: readonly Buffer[]): Promise<void> {
  const ids = records.map((record) => record.toString('utf8'));
  await tx.execute(sql`INSERT INTO chaos_sink (id) SELECT unnest(${sql.param(ids)}::text[])`);
}
