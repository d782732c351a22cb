// The handler of the queue "orders": a record is a JSON order {"id": "A-1", "customer": "ada", "total_cents":
// 1250}; it becomes a row of the table `orders`. An order sent twice is stored once (its id is the key), so
// producers may retry freely. A record that is not an order throws, and ends in the error queue errors-orders.
import { integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

import type { ProcessBatchFn } from 'baton-runtime';

export const orders = pgTable('orders', {
  id: text('id').primaryKey(),
  customer: text('customer').notNull(),
  totalCents: integer('total_cents').notNull(),
  receivedAt: timestamp('received_at', { withTimezone: true, mode: 'string' }).notNull().defaultNow(),
});

/** The tables this handler writes to (`baton make-migration orders` compares them with the database). */
export const schema = { orders };

export interface Order {
  id: string;
  customer: string;
  totalCents: number;
}

export function parseOrder(record: Buffer): Order {
  const value: unknown = JSON.parse(record.toString('utf8'));
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError('an order must be a JSON object');
  }
  const { id, customer, total_cents: totalCents } = value as Record<string, unknown>;
  if (typeof id !== 'string' || id === '') throw new TypeError('missing string field "id"');
  if (typeof customer !== 'string' || customer === '') throw new TypeError('missing string field "customer"');
  if (!Number.isSafeInteger(totalCents) || (totalCents as number) < 0) {
    throw new TypeError('"total_cents" must be a whole number of cents, 0 or more');
  }
  return { id, customer, totalCents: totalCents as number };
}

/** A batch in one statement; an id already stored (or twice in the batch) is skipped, not an error. */
export const processBatch: ProcessBatchFn = async (tx, records) => {
  await tx.insert(orders).values(records.map(parseOrder)).onConflictDoNothing({ target: orders.id });
};
