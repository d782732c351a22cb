// A test handler: each record is a word stored in table `words`; a record "fail" throws.
import { sql } from 'drizzle-orm';
import { pgTable, serial, text } from 'drizzle-orm/pg-core';

import type { Tx } from '../../../src/index.js';

export const words = pgTable('words', { id: serial('id').primaryKey(), word: text('word').notNull() });
export const schema = { words };

export async function processBatch(tx: Tx, records: readonly Buffer[]): Promise<void> {
  const values = records.map((record) => {
    const word = record.toString('utf8');
    if (word === 'fail') throw new Error('the word "fail" is refused');
    return word;
  });
  await tx.execute(sql`INSERT INTO ${words} (word) SELECT unnest(${sql.param(values)}::text[])`);
}
