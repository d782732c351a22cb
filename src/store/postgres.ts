// The PostgreSQL server store: a pg connection pool shared by every node. Connections that die are
// replaced by the pool; statements that fail because the server is gone surface as
// BackendUnavailableError, so callers retry with back-off instead of counting a handler failure.
// Every statement has a limit on the server below the node's own wait (query_timeout_ms), so that the
// server ends a statement before the node gives up on it: an error answered never commits later.
import { connect as connectTcp } from 'node:net';

import type { SQL } from 'drizzle-orm';
import { sql } from 'drizzle-orm';
import type { NodePgDatabase } from 'drizzle-orm/node-postgres';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';

import type { PostgresStoreConfig } from '../config/types.js';
import { BackendUnavailableError, describeError, StatementError } from '../errors.js';
import type { Logger } from '../log.js';
import { backoffDelay } from '../util/backoff.js';
import { sleep } from '../util/sleep.js';
import { isConnectionError } from '../util/connection-errors.js';
import { APPEND_TO_SEARCH_PATH_EXPRESSION, DEFAULT_STORE_SCHEMA } from './baton-schema.js';
import { SharedListener } from './listener.js';
import type { Notification, QueryResult, Row, Store, TransactionOptions, Tx } from './store.js';
import { rowsOf, withDatabaseReason } from './store.js';

/** The default of `[store] query_timeout_ms`, for stores opened without a config (queue databases, groups). */
const DEFAULT_QUERY_TIMEOUT_MS = 30_000;
/** How long a caller waits for a free connection of the pool before it is told the store is busy. */
const POOL_WAIT_MS = 5_000;
/** The server's limit on a statement stays this far below query_timeout_ms (a fifth of it, when shorter). */
const SERVER_LIMIT_MARGIN_MS = 5_000;
/** How often the server looks whether the node of a running statement is still connected (PostgreSQL ≥ 14). */
const CLIENT_CHECK_INTERVAL_MS = 1_000;
/** Run on each new connection (see onConnect); servers without client_connection_check_interval skip it. */
const PREPARE_CONNECTION = `SELECT ${APPEND_TO_SEARCH_PATH_EXPRESSION},
  CASE WHEN current_setting('client_connection_check_interval', true) IS NOT NULL
       THEN set_config('client_connection_check_interval', '${CLIENT_CHECK_INTERVAL_MS}', false) END`;

/**
 * The limit the server puts on one statement: `statement_timeout_ms` when set, else `query_timeout_ms` less a
 * margin (5 s, or a fifth of it when shorter), never within that margin of `query_timeout_ms`; 0: none.
 */
export function serverStatementLimitMs(statementTimeoutMs: number, queryTimeoutMs: number): number {
  if (queryTimeoutMs <= 0) return Math.max(0, statementTimeoutMs);
  const ceiling = queryTimeoutMs - Math.min(SERVER_LIMIT_MARGIN_MS, Math.floor(queryTimeoutMs / 5));
  return statementTimeoutMs > 0 ? Math.min(statementTimeoutMs, ceiling) : ceiling;
}

export async function openPostgresStore(
  storeConfig: Omit<PostgresStoreConfig, 'queryTimeoutMs' | 'schema'> & {
    readonly queryTimeoutMs?: number;
    readonly schema?: string;
  },
  options: { log: Logger; startupTimeoutMs: number; applicationName?: string },
): Promise<Store> {
  const config = {
    ...storeConfig,
    queryTimeoutMs: storeConfig.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS,
    schema: storeConfig.schema ?? DEFAULT_STORE_SCHEMA,
  };
  const applicationName = options.applicationName ?? 'baton';
  const statementLimitMs = serverStatementLimitMs(config.statementTimeoutMs, config.queryTimeoutMs);
  const pool = new pg.Pool({
    connectionString: config.url,
    max: config.poolSize,
    application_name: applicationName,
    keepAlive: true,
    connectionTimeoutMillis: POOL_WAIT_MS,
    ...(statementLimitMs > 0 ? { statement_timeout: statementLimitMs } : {}),
    ...(config.queryTimeoutMs > 0 ? { query_timeout: config.queryTimeoutMs } : {}),
    // One statement queued before the first of the new connection, which need not wait for it: Baton's schema
    // at the end of the search path, and (PostgreSQL ≥ 14) the server ends a running statement, a lock wait
    // too, soon after its node closed the connection. A connection that could not run it is dropped: the
    // statements queued behind fail, and are retried on another.
    onConnect: (client) => {
      client.query(PREPARE_CONNECTION, [config.schema]).catch((error: unknown) => {
        options.log.warn({ err: describeError(error) }, 'store: could not prepare a new connection');
        socketOf(client)?.destroy(error instanceof Error ? error : undefined);
      });
    },
  });
  // A connection that dies must not crash the process. The pool reports idle ones ('error' on the pool);
  // one that is checked out emits 'error' on itself, which would be fatal without a listener. The query
  // running on it rejects anyway, and the pool replaces it.
  pool.on('error', (error) =>
    options.log.warn({ err: describeError(error) }, 'store: an idle connection failed'),
  );
  pool.on('connect', (client) => {
    client.on('error', (error) =>
      options.log.warn({ err: describeError(error) }, 'store: a connection failed'),
    );
    dropWhenSilent(client, options.log);
  });
  await waitUntilReachable(pool, config.url, options.startupTimeoutMs, options.log);

  const db = drizzle(pool);
  /** Transactions run on a client of their own, so that a broken one is destroyed rather than reused. */
  const clientDbs = new WeakMap<pg.PoolClient, NodePgDatabase>();
  const listener = new SharedListener(config.url, `${applicationName}:listen`, options.log);
  let closed = false;

  const guard = async <T>(work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } catch (error) {
      if (isPoolTimeout(error)) {
        throw new BackendUnavailableError(
          'store',
          `every connection of the pool (pool_size = ${config.poolSize}) stayed busy for ${POOL_WAIT_MS} ms`,
          { cause: withDatabaseReason(error) },
        );
      }
      // withDatabaseReason: the cause's message names the statement, never its parameters (the records).
      if (isConnectionError(error)) {
        throw new BackendUnavailableError('store', 'the PostgreSQL server is unreachable', {
          cause: withDatabaseReason(error),
        });
      }
      throw withDatabaseReason(error);
    }
  };
  /** Baton's own statements: one the server ended for its limit may succeed later (a lock held elsewhere). */
  const guardOwn = async <T>(work: () => Promise<T>): Promise<T> => {
    try {
      return await guard(work);
    } catch (error) {
      const sqlState = error instanceof StatementError ? error.sqlState : undefined;
      if (sqlState === undefined || !ENDED_BY_SERVER.has(sqlState)) throw error;
      throw new BackendUnavailableError(
        'store',
        `the server ended the statement before it finished (${ENDED_BY_SERVER.get(sqlState)}, limit ${statementLimitMs} ms); nothing of it was stored`,
        { cause: error },
      );
    }
  };

  return {
    kind: 'postgres',
    exclusive: false,
    schema: config.schema,
    transaction<T>(fn: (tx: Tx) => Promise<T>, transactionOptions: TransactionOptions = {}): Promise<T> {
      return guardOwn(async () => {
        const client = await pool.connect();
        let broken = false;
        const schemaChange = transactionOptions.schemaChange === true;
        // A schema change may run for long (a table rewritten): no limit on its statements, here or on the
        // server; its lock waits are limited instead, so that it never queues everyone behind it for long.
        const restoreWait = schemaChange ? waitWithoutLimit(client) : undefined;
        try {
          let clientDb = clientDbs.get(client);
          if (!clientDb) {
            clientDb = drizzle(client);
            clientDbs.set(client, clientDb);
          }
          return await clientDb.transaction(async (tx) => {
            if (schemaChange) {
              await tx.execute(sql.raw('SET LOCAL statement_timeout = 0'));
              await tx.execute(sql.raw(`SET LOCAL lock_timeout = ${statementLimitMs}`));
            }
            return fn(tx);
          });
        } catch (error) {
          broken = isConnectionError(error);
          throw error;
        } finally {
          restoreWait?.();
          // A connection that failed (or went silent) leaves the pool instead of serving the next caller.
          client.release(broken);
        }
      });
    },
    execute(query: SQL): Promise<Row[]> {
      return guardOwn(async () => rowsOf(await db.execute(query)));
    },
    query(text: string, params: readonly unknown[] = []): Promise<QueryResult> {
      return guard(async () => {
        const result = await pool.query<Row>(text, [...params]);
        return { columns: (result.fields ?? []).map((field) => field.name), rows: result.rows ?? [] };
      });
    },
    async ping(): Promise<boolean> {
      if (closed) return false;
      try {
        await pool.query('SELECT 1');
        return true;
      } catch {
        return false;
      }
    },
    listen(
      channel: string,
      onNotification: (notification: Notification) => void,
      onConnect: () => void,
      onDisconnect?: () => void,
    ) {
      return Promise.resolve(listener.subscribe(channel, onNotification, onConnect, onDisconnect));
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await listener.close();
      await pool.end();
    },
  };
}

/** SQLSTATEs of a statement the server ended: its statement_timeout, a cancel request, lock_timeout. */
const ENDED_BY_SERVER = new Map([
  ['57014', 'cancelled: statement_timeout or a cancel request'],
  ['55P03', 'lock_timeout'],
]);

/** pg-pool's error (drizzle's cause) when no connection came free within connectionTimeoutMillis. */
function isPoolTimeout(error: unknown): boolean {
  for (let current = error, depth = 0; current instanceof Error && depth < 3; depth++) {
    if (current.message === 'timeout exceeded when trying to connect') return true;
    current = current.cause;
  }
  return false;
}

/**
 * Lifts the client-side wait (query_timeout) of one checked-out client, for a schema change; returns the
 * function that puts it back. pg reads it from the client's connection parameters at each statement.
 */
function waitWithoutLimit(client: pg.PoolClient): () => void {
  const parameters: unknown = Reflect.get(client, 'connectionParameters');
  if (typeof parameters !== 'object' || parameters === null) return () => undefined;
  const before: unknown = Reflect.get(parameters, 'query_timeout');
  Reflect.set(parameters, 'query_timeout', 0);
  return () => Reflect.set(parameters, 'query_timeout', before);
}

/**
 * With `query_timeout`, pg fails a statement whose answer does not come in time but keeps waiting on the
 * connection, so every later statement on it would hang too. The server is asked to cancel the statement
 * (it may still be running: the node must not answer an error for work that commits later), and the
 * connection is cut at once: what is queued behind it fails fast (a rollback, say) and the pool replaces it.
 */
function dropWhenSilent(client: pg.PoolClient, log: Logger): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  const onError = (error: unknown): void => {
    if (!(error instanceof Error) || !error.message.includes('Query read timeout')) return;
    log.warn(
      'store: no answer from the server within query_timeout_ms; cancelling the statement and dropping the connection',
    );
    requestCancel(client, log);
    socketOf(client)?.destroy(error);
  };
  (client as { query: unknown }).query = (...args: unknown[]): unknown => {
    // pg-pool's pool.query() passes a callback; drizzle awaits the promise.
    const last = args.at(-1);
    if (typeof last === 'function') {
      args[args.length - 1] = (error: unknown, ...rest: unknown[]): unknown => {
        if (error) onError(error);
        return (last as (...values: unknown[]) => unknown)(error, ...rest);
      };
    }
    const result = query(...args);
    if (result instanceof Promise) result.catch(onError);
    return result;
  };
}

/**
 * Sends PostgreSQL's cancel request for the statement running on `client`'s backend, over a connection of
 * its own (not a session: it needs no slot of the pool, and no authentication). Best effort.
 */
function requestCancel(client: pg.PoolClient, log: Logger): void {
  const pid: unknown = Reflect.get(client, 'processID');
  const secret: unknown = Reflect.get(client, 'secretKey');
  const parameters: unknown = Reflect.get(client, 'connectionParameters');
  if (
    typeof pid !== 'number' ||
    typeof secret !== 'number' ||
    typeof parameters !== 'object' ||
    !parameters
  ) {
    return;
  }
  const host: unknown = Reflect.get(parameters, 'host');
  const port: unknown = Reflect.get(parameters, 'port');
  if (typeof host !== 'string' || typeof port !== 'number') return;
  const packet = Buffer.alloc(16);
  packet.writeInt32BE(16, 0);
  packet.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  packet.writeInt32BE(pid, 8);
  packet.writeInt32BE(secret, 12);
  const socket = host.startsWith('/')
    ? connectTcp({ path: `${host}/.s.PGSQL.${port}` })
    : connectTcp({ host, port });
  socket.setTimeout(POOL_WAIT_MS, () => socket.destroy());
  socket.on('error', (error) =>
    log.warn({ err: describeError(error), pid }, 'store: could not send the cancel request'),
  );
  socket.on('connect', () => socket.end(packet));
  log.info({ pid }, 'store: asked the server to cancel the statement given up on');
}

/** The code of PostgreSQL's CancelRequest message (1234 << 16 | 5678). */
const CANCEL_REQUEST_CODE = 80_877_102;

/** The socket under a pg client (not in pg's typings, stable across its versions). */
function socketOf(client: pg.ClientBase): { destroy(error?: Error): void } | undefined {
  const connection = (client as unknown as { connection?: { stream?: { destroy?: unknown } } }).connection;
  const stream = connection?.stream;
  return typeof stream?.destroy === 'function' ? (stream as { destroy(error?: Error): void }) : undefined;
}

/** Tries the server until it answers or `timeoutMs` passes (then BackendUnavailableError: exit code 4). */
async function waitUntilReachable(pool: pg.Pool, url: string, timeoutMs: number, log: Logger): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      await pool.query('SELECT 1');
      return;
    } catch (error) {
      const delay = backoffDelay(attempt, { initialMs: 1000, maxMs: 32_000 });
      if (Date.now() + delay > deadline) {
        await pool.end().catch(() => undefined);
        throw new BackendUnavailableError('store', `cannot reach PostgreSQL at ${redactUrl(url)}`, {
          cause: error,
        });
      }
      log.warn(
        { err: describeError(error), retryInMs: delay },
        `store: PostgreSQL unreachable; retrying in ${delay} ms`,
      );
      await sleep(delay);
    }
  }
}

function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
}
