// Which statement gets which limit on a PostgreSQL store: Baton's own statements end on the server before
// the node stops waiting (a transient BackendUnavailableError, nothing stored), ad-hoc SQL ends the same way
// with the server's reason, and schema changes run without a statement limit but with a limit on each lock
// wait, while the lock that serialises migrations is waited for as long as another migration runs.
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BackendUnavailableError, StatementError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore, serverStatementLimitMs } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { executeIn } from '../../src/store/store.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';

/** The node waits 2.5 s; the server ends a statement after 2 s. */
const QUERY_TIMEOUT_MS = 2_500;
const LIMIT_MS = serverStatementLimitMs(0, QUERY_TIMEOUT_MS);

let database: TestDatabase;
let store: Store;
let other: pg.Client;

beforeAll(async () => {
  database = await createTestDatabase();
  store = await openPostgresStore(
    {
      kind: 'postgres',
      url: database.url,
      poolSize: 2,
      statementTimeoutMs: 0,
      queryTimeoutMs: QUERY_TIMEOUT_MS,
    },
    { log: createLogger({ level: 'silent' }), startupTimeoutMs: 10_000, applicationName: 'baton:limits' },
  );
  await applyMigrations(store, await builtinMigrations());
  await store.execute(sql`CREATE TABLE busy (id int)`);
  other = new pg.Client({ connectionString: database.url, application_name: 'test-other' });
  await other.connect();
});

afterAll(async () => {
  await other?.end();
  await store?.close();
  await database?.drop();
});

async function failure(work: Promise<unknown>): Promise<unknown> {
  return work.then(
    () => undefined,
    (error: unknown) => error,
  );
}

describe('statement limits on a PostgreSQL store', () => {
  it('derives the server limit below the node wait', () => {
    expect(serverStatementLimitMs(0, 30_000)).toBe(25_000);
    expect(serverStatementLimitMs(0, 2_500)).toBe(2_000);
    expect(serverStatementLimitMs(60_000, 65_000)).toBe(60_000);
    // Never within the margin of the node's wait, whatever is asked.
    expect(serverStatementLimitMs(30_000, 30_000)).toBe(25_000);
    expect(serverStatementLimitMs(10_000, 0)).toBe(10_000);
    expect(serverStatementLimitMs(0, 0)).toBe(0);
  });

  it("ends Baton's own statement on the server as a transient error, and its connection serves on", async () => {
    await other.query('BEGIN');
    await other.query('LOCK TABLE busy IN ACCESS EXCLUSIVE MODE');
    const started = Date.now();
    const error = await failure(store.execute(sql`INSERT INTO busy (id) VALUES (1)`));
    const waited = Date.now() - started;
    await other.query('COMMIT');
    expect(error).toBeInstanceOf(BackendUnavailableError);
    expect(String(error)).toContain('the server ended the statement');
    expect(waited).toBeGreaterThanOrEqual(LIMIT_MS - 100);
    expect(waited).toBeLessThan(QUERY_TIMEOUT_MS + 5_000);
    // Ended on the server: the insert never happens, even now that the lock is gone.
    expect(await store.execute(sql`SELECT count(*)::int AS n FROM busy`)).toEqual([{ n: 0 }]);
    // The same in a transaction.
    const inTransaction = await failure(
      store.transaction((tx) => executeIn(tx, sql`SELECT pg_sleep(${(LIMIT_MS + 1_000) / 1000})`)),
    );
    expect(inTransaction).toBeInstanceOf(BackendUnavailableError);
  });

  it('has the server look for a node gone mid-statement (PostgreSQL 14 or later)', async () => {
    const version = Number((await store.query('SHOW server_version_num')).rows[0]?.['server_version_num']);
    expect(version).toBeGreaterThanOrEqual(140_000);
    expect((await store.query('SHOW client_connection_check_interval')).rows).toEqual([
      { client_connection_check_interval: '1s' },
    ]);
    expect((await store.query('SHOW statement_timeout')).rows).toEqual([{ statement_timeout: '2s' }]);
  });

  it('ends ad-hoc SQL with the server reason (57014)', async () => {
    const error = await failure(store.query(`SELECT pg_sleep(${(LIMIT_MS + 1_000) / 1000})`));
    expect(error).toBeInstanceOf(StatementError);
    expect((error as StatementError).sqlState).toBe('57014');
  });

  it('runs a schema change past the limit, then puts the limits back', async () => {
    const slept = await store.transaction(
      async (tx) => {
        await executeIn(tx, sql`SELECT pg_sleep(${(QUERY_TIMEOUT_MS + 500) / 1000})`);
        return executeIn(tx, sql`SELECT current_setting('statement_timeout') AS limit`);
      },
      { schemaChange: true },
    );
    expect(slept).toEqual([{ limit: '0' }]);
    // The next transactions, on the same connections, have their limits again.
    const again = await failure(
      store.transaction((tx) => executeIn(tx, sql`SELECT pg_sleep(${(LIMIT_MS + 1_000) / 1000})`)),
    );
    expect(again).toBeInstanceOf(BackendUnavailableError);
    const again2 = await failure(
      store.transaction((tx) => executeIn(tx, sql`SELECT pg_sleep(${(LIMIT_MS + 1_000) / 1000})`)),
    );
    expect(again2).toBeInstanceOf(BackendUnavailableError);
  });

  it('limits the lock waits of a schema change (lock_timeout)', async () => {
    await other.query('BEGIN');
    await other.query('LOCK TABLE busy IN ACCESS SHARE MODE');
    const started = Date.now();
    const error = await failure(
      store.transaction((tx) => executeIn(tx, sql`ALTER TABLE busy ADD COLUMN note text`), {
        schemaChange: true,
      }),
    );
    const waited = Date.now() - started;
    await other.query('COMMIT');
    expect(error).toBeInstanceOf(BackendUnavailableError);
    expect(String(error)).toContain('lock_timeout');
    expect(waited).toBeLessThan(LIMIT_MS + 5_000);
    expect(await store.execute(sql`SELECT to_regclass('busy') IS NOT NULL AS kept`)).toEqual([
      { kept: true },
    ]);
  });

  it("waits for another node's migration past every limit, then applies its own", async () => {
    // Another node holds the lock that serialises migrations for longer than any statement limit.
    await other.query('BEGIN');
    await other.query('SELECT pg_advisory_xact_lock(422541815662)'); // "baton", the migration lock
    let applied: string[] | undefined;
    const migrating = applyMigrations(store, [
      { id: 'test/0001_waits', sql: 'CREATE TABLE waited (id int);' },
    ]).then((ids) => (applied = ids));
    await new Promise((resolve) => setTimeout(resolve, QUERY_TIMEOUT_MS + 1_000));
    expect(applied).toBeUndefined();
    await other.query('COMMIT');
    await migrating;
    expect(applied).toEqual(['test/0001_waits']);
  });
});
