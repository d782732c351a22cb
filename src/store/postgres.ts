// The PostgreSQL server store: a pg connection pool shared by every node. Connections that die are
// replaced by the pool; statements that fail because the server is gone surface as
// BackendUnavailableError, so callers retry with back-off instead of counting a handler failure.
import type { SQL } from 'drizzle-orm';
import type { NodePgDatabase } from 'drizzle-orm/node-postgres';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';

import type { PostgresStoreConfig } from '../config/types.js';
import { BackendUnavailableError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { backoffDelay } from '../util/backoff.js';
import { sleep } from '../util/sleep.js';
import { isConnectionError } from '../util/connection-errors.js';
import type { Notification, QueryResult, Row, Store, Tx } from './store.js';
import { rowsOf, withDatabaseReason } from './store.js';

/** The default of `[store] query_timeout_ms`, for stores opened without a config (queue databases, groups). */
const DEFAULT_QUERY_TIMEOUT_MS = 30_000;

export async function openPostgresStore(
  storeConfig: Omit<PostgresStoreConfig, 'queryTimeoutMs'> & { readonly queryTimeoutMs?: number },
  options: { log: Logger; startupTimeoutMs: number; applicationName?: string },
): Promise<Store> {
  const config = { ...storeConfig, queryTimeoutMs: storeConfig.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS };
  const pool = new pg.Pool({
    connectionString: config.url,
    max: config.poolSize,
    application_name: options.applicationName ?? 'baton',
    keepAlive: true,
    connectionTimeoutMillis: 5_000,
    ...(config.statementTimeoutMs > 0 ? { statement_timeout: config.statementTimeoutMs } : {}),
    ...(config.queryTimeoutMs > 0 ? { query_timeout: config.queryTimeoutMs } : {}),
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
  const listeners = new Set<() => Promise<void>>();
  let closed = false;

  const guard = async <T>(work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } catch (error) {
      if (isConnectionError(error)) {
        throw new BackendUnavailableError('store', 'the PostgreSQL server is unreachable', { cause: error });
      }
      throw withDatabaseReason(error);
    }
  };

  return {
    kind: 'postgres',
    exclusive: false,
    transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
      return guard(async () => {
        const client = await pool.connect();
        let broken = false;
        try {
          let clientDb = clientDbs.get(client);
          if (!clientDb) {
            clientDb = drizzle(client);
            clientDbs.set(client, clientDb);
          }
          return await clientDb.transaction((tx) => fn(tx));
        } catch (error) {
          broken = isConnectionError(error);
          throw error;
        } finally {
          // A connection that failed (or went silent) leaves the pool instead of serving the next caller.
          client.release(broken);
        }
      });
    },
    execute(query: SQL): Promise<Row[]> {
      return guard(async () => rowsOf(await db.execute(query)));
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
    listen(channel: string, onNotification: (notification: Notification) => void, onConnect: () => void) {
      const stop = listenForever(config.url, channel, onNotification, onConnect, options.log);
      listeners.add(stop);
      return Promise.resolve(async () => {
        listeners.delete(stop);
        await stop();
      });
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await Promise.all([...listeners].map((stop) => stop()));
      await pool.end();
    },
  };
}

/**
 * With `query_timeout`, pg fails a statement whose answer does not come in time but keeps waiting on the
 * connection, so every later statement on it would hang too. Such a connection is cut at once: what is
 * queued behind it fails fast (a rollback, say) and the pool replaces it.
 */
function dropWhenSilent(client: pg.PoolClient, log: Logger): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  (client as { query: unknown }).query = (...args: unknown[]): unknown => {
    const result = query(...args);
    if (result instanceof Promise) {
      result.catch((error: unknown) => {
        if (!(error instanceof Error) || !error.message.includes('Query read timeout')) return;
        log.warn('store: a connection went silent past query_timeout_ms; dropping it');
        socketOf(client)?.destroy(error);
      });
    }
    return result;
  };
}

/** The socket under a pg client (not in pg's typings, stable across its versions). */
function socketOf(client: pg.PoolClient): { destroy(error?: Error): void } | undefined {
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

/**
 * Holds a dedicated connection that LISTENs on `channel`, reconnecting with back-off when it drops.
 * `onConnect` runs after every (re)connection: notifications sent meanwhile are lost, so the caller
 * treats a connect as a wake-up and looks for work. Returns a function that stops it.
 */
function listenForever(
  url: string,
  channel: string,
  onNotification: (notification: Notification) => void,
  onConnect: () => void,
  log: Logger,
): () => Promise<void> {
  const stopping = new AbortController();
  // Made once, so that a stop that came before the loop looks still ends the wait.
  const stopped = new Promise<void>((resolve) =>
    stopping.signal.addEventListener('abort', () => resolve(), { once: true }),
  );
  let client: pg.Client | undefined;
  const untilStopped = async (work: Promise<unknown>): Promise<void> => {
    work.catch(() => undefined);
    await Promise.race([work, stopped]);
  };
  const loop = async (): Promise<void> => {
    for (let failures = 0; !stopping.signal.aborted;) {
      const current = new pg.Client({
        connectionString: url,
        keepAlive: true,
        application_name: 'baton-listen',
      });
      client = current;
      try {
        const ended = new Promise<void>((resolve) => {
          current.on('error', () => resolve());
          current.on('end', () => resolve());
        });
        // A stop may come while connecting: pg then never settles connect(), so never wait on it alone.
        await untilStopped(current.connect());
        if (stopping.signal.aborted) break;
        current.on('notification', (message) =>
          onNotification({ channel: message.channel, payload: message.payload ?? '' }),
        );
        await untilStopped(current.query(`LISTEN ${pg.escapeIdentifier(channel)}`));
        if (stopping.signal.aborted) break;
        failures = 0;
        onConnect();
        await Promise.race([ended, stopped]);
      } catch (error) {
        failures += 1;
        if (!stopping.signal.aborted) {
          log.warn({ err: describeError(error), channel }, 'store: LISTEN connection failed');
        }
      }
      if (stopping.signal.aborted) break;
      await current.end().catch(() => undefined);
      const delay = backoffDelay(Math.max(1, failures), { initialMs: 1000, maxMs: 32_000 });
      log.warn({ channel, retryInMs: delay }, `store: LISTEN connection lost; reconnecting in ${delay} ms`);
      await sleep(delay, stopping.signal);
    }
  };
  const running = loop();
  return async () => {
    stopping.abort();
    const ending = client?.end().catch(() => undefined);
    // pg may leave end() of a connection that was still connecting unsettled: never wait on it for long.
    await Promise.race([Promise.all([ending, running]), sleep(LISTEN_STOP_WAIT_MS)]);
  };
}

/** How long stopping a LISTEN connection waits for it to close. */
const LISTEN_STOP_WAIT_MS = 2_000;

function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
}
