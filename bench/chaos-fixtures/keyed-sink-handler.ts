// The handler of the chaos run's ordered queues (`kq` on the store, `krq` on Redis): a record is
// "<key> <seq> <id>", and each run that succeeds inserts (queue, key, seq, id) into `chaos_keyed_sink`, whose
// `row` gives the order the runs committed in. No unique constraint: a record applied twice shows as a second
// row. A record may end with a time (epoch ms) before which every run of it fails, so that the failure reaches
// the queue and its key is held back while it waits out its back-off. A time, not a count of runs: a count
// kept in a process starts over on each node it lands on, and could reach max_attempts.
import { sql } from 'drizzle-orm';
import { bigserial, integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

import type { HandlerContext, Tx } from '../../src/index.js';

export const chaosKeyedSink = pgTable('chaos_keyed_sink', {
  row: bigserial('row', { mode: 'number' }).primaryKey(),
  queue: text('queue').notNull(),
  key: text('key').notNull(),
  seq: integer('seq').notNull(),
  id: text('id').notNull(),
  ranAt: timestamp('ran_at', { withTimezone: true, mode: 'date' }).notNull(),
});
export const schema = { chaosKeyedSink };

export async function process(tx: Tx, record: Buffer, ctx: HandlerContext): Promise<void> {
  const text = record.toString('utf8');
  const [key = '', seq = '', id = '', failUntil] = text.split(' ');
  if (failUntil !== undefined && Date.now() < Number(failUntil)) {
    throw new Error(`record ${key} ${seq} fails until ${new Date(Number(failUntil)).toISOString()}`);
  }
  await tx.execute(
    sql`INSERT INTO chaos_keyed_sink (queue, key, seq, id, ran_at)
        VALUES (${ctx.queue}, ${key}, ${Number(seq)}, ${id}, clock_timestamp())`,
  );
}
