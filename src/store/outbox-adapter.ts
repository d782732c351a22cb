// The application's own transaction, as the outbox functions (`enqueue`, `sendEvent`) take it: a
// node-postgres client in a transaction (or anything with its `query`) or a drizzle transaction. Baton's
// statements run on it as they are, so that they commit or roll back with the application's own work.
import type { SQL, sql } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';

import { DEFAULT_STORE_SCHEMA, STORE_SCHEMA_PATTERN } from '../config/schema.js';
import { BadRequestError } from '../errors.js';
import type { Row } from './store.js';
import { rowsOf } from './store.js';

/**
 * A node-postgres client (or PoolClient) in a transaction, or anything with the same `query`: it runs `text`
 * with the positional parameters `$1…` on the transaction's connection and resolves to `{ rows }` (or to
 * the array of rows). It does not begin, commit or retry anything.
 */
export interface OutboxClient {
  query(text: string, params?: unknown[]): Promise<unknown>;
}

/** A drizzle transaction (or database), whose `execute` runs a drizzle `sql` statement. */
export interface OutboxDrizzle {
  execute(query: ReturnType<typeof sql>): Promise<unknown>;
}

const dialect = new PgDialect();

/** Baton's schema of an outbox call (default "baton"), checked: it is written into the statement. */
export function outboxSchema(schema: string | undefined, caller: string): string {
  const checked = schema ?? DEFAULT_STORE_SCHEMA;
  if (!STORE_SCHEMA_PATTERN.test(checked))
    throw new BadRequestError(`${caller}: invalid schema ${JSON.stringify(checked)}`);
  return checked;
}

/** Runs `statement` in the application's transaction and returns its rows. */
export async function executeInOutbox(tx: OutboxClient | OutboxDrizzle, statement: SQL): Promise<Row[]> {
  if (isClient(tx)) {
    const query = dialect.sqlToQuery(statement);
    return rowsOf(await tx.query(query.sql, [...query.params]));
  }
  return rowsOf(await tx.execute(statement));
}

function isClient(tx: OutboxClient | OutboxDrizzle): tx is OutboxClient {
  return typeof (tx as Partial<OutboxClient>).query === 'function';
}
