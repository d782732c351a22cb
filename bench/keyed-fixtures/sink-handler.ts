// The handler of the keyed benchmark's queues: each record, `{"key":"k42","seq":17,…}`, becomes a row of
// keyed_sink in one INSERT per batch, the same work whatever the queue's ordering. The rows keep the key and
// the sequence number, so that the benchmark can check each key's records were stored in publish order.
import { sql } from 'drizzle-orm';
import { bigserial, integer, pgTable, text } from 'drizzle-orm/pg-core';

import type { Tx } from '../../src/index.js';

export const keyedSink = pgTable('keyed_sink', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  key: text('key').notNull(),
  seq: integer('seq').notNull(),
});

export const schema = { keyedSink };

interface SinkRecord {
  readonly key: string;
  readonly seq: number;
}

function parse(record: Buffer): SinkRecord {
  const value: unknown = JSON.parse(record.toString('utf8'));
  if (
    typeof value === 'object' &&
    value !== null &&
    'key' in value &&
    'seq' in value &&
    typeof value.key === 'string' &&
    typeof value.seq === 'number'
  ) {
    return { key: value.key, seq: value.seq };
  }
  throw new TypeError('expected {"key": string, "seq": number}');
}

export async function processBatch(tx: Tx, records: readonly Buffer[]): Promise<void> {
  const parsed = records.map(parse);
  await tx.execute(
    sql`INSERT INTO ${keyedSink} (key, seq)
        SELECT * FROM unnest(${sql.param(parsed.map((record) => record.key))}::text[],
                             ${sql.param(parsed.map((record) => record.seq))}::int[])`,
  );
}
