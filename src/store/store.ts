// The Store port: the sink database that handlers write to (PGlite embedded, or a PostgreSQL server).
// It hands out transactions as drizzle `Tx` objects and runs Baton's own SQL. It does not know about
// queues, handlers or HTTP; driver types (PGlite, pg) stay inside the adapters.
import type { ExtractTablesWithRelations, SQL } from 'drizzle-orm';

import { statementErrorOf } from '../errors.js';
import type { PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';

/** The transaction a handler receives: a drizzle PostgreSQL transaction, the same on PGlite and a server. */
export type Tx = PgTransaction<
  PgQueryResultHKT,
  Record<string, never>,
  ExtractTablesWithRelations<Record<string, never>>
>;

export type Row = Record<string, unknown>;

/** Result of an ad-hoc statement (the `sql` command): rows plus the column order. */
export interface QueryResult {
  readonly columns: readonly string[];
  readonly rows: readonly Row[];
}

export interface TransactionOptions {
  /**
   * A schema change (migrations, created tables): on a server its statements run without the store's
   * statement limit, since rewriting a large table takes long, but each wait for a lock is limited by it.
   */
  readonly schemaChange?: boolean;
}

export interface Notification {
  readonly channel: string;
  readonly payload: string;
}

export interface Store {
  readonly kind: 'pglite' | 'postgres';
  /** True when one process alone may open the store (PGlite): other processes go through its owner. */
  readonly exclusive: boolean;
  /** Baton's schema: where Baton's own tables are (see baton-schema.ts); the end of every connection's search path. */
  readonly schema: string;
  /** Runs `fn` in one transaction: commit when it returns, roll back when it throws. */
  transaction<T>(fn: (tx: Tx) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /** Runs one statement in its own transaction and returns its rows. */
  execute(query: SQL): Promise<Row[]>;
  /** Runs an ad-hoc SQL text (one statement, optional positional parameters). */
  query(text: string, params?: readonly unknown[]): Promise<QueryResult>;
  /** Resolves true when the store answers a trivial query. */
  ping(): Promise<boolean>;
  /**
   * Optional (a server store): LISTEN on `channel` over a connection of its own, reconnecting as needed.
   * `onConnect` runs after each (re)connection, since notifications sent while disconnected are lost.
   * `onDisconnect` runs when the connection is lost (or never came up), until `onConnect` runs again.
   * Resolves to a function that stops listening.
   */
  listen?(
    channel: string,
    onNotification: (notification: Notification) => void,
    onConnect: () => void,
    onDisconnect?: () => void,
  ): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/**
 * `error` as a StatementError when it is a statement the database refused (see statementErrorOf), else as
 * it is. `execute`, `transaction` and `query` of both stores reject with it.
 */
export function withDatabaseReason(error: unknown): unknown {
  return statementErrorOf(error) ?? error;
}

/** Runs a statement inside `tx` and returns its rows, whatever the driver's result shape. */
export async function executeIn(tx: Tx, query: SQL): Promise<Row[]> {
  return rowsOf(await tx.execute(query));
}

export function rowsOf(result: unknown): Row[] {
  if (typeof result === 'object' && result !== null && 'rows' in result && Array.isArray(result.rows)) {
    return result.rows as Row[];
  }
  if (Array.isArray(result)) return result as Row[];
  return [];
}
