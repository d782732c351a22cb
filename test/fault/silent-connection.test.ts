// A store connection that goes silent (the server still looks connected, but nothing comes back: a
// black-holed link) fails the statement after query_timeout_ms as an unavailable backend, is dropped, and
// the next transaction runs on a fresh connection once the link is back: the node never hangs on it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BackendUnavailableError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { executeIn } from '../../src/store/store.js';
import { sql } from 'drizzle-orm';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { TcpProxy } from '../support/tcp-proxy.js';
import { startTcpProxy } from '../support/tcp-proxy.js';

let database: TestDatabase;
let proxy: TcpProxy;
let store: Store;

beforeAll(async () => {
  database = await createTestDatabase();
  const url = new URL(database.url);
  proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
  url.port = String(proxy.port);
  store = await openPostgresStore(
    { kind: 'postgres', url: url.toString(), poolSize: 2, statementTimeoutMs: 0, queryTimeoutMs: 1_000 },
    { log: createLogger({ level: 'silent' }), startupTimeoutMs: 5_000 },
  );
  await applyMigrations(store, await builtinMigrations());
});

afterAll(async () => {
  await store?.close();
  await proxy?.close();
  await database?.drop();
});

describe('a store connection that goes silent', () => {
  it('fails the transaction as unavailable after query_timeout_ms, then works again on a new connection', async () => {
    // Both pooled connections exist and are idle.
    await Promise.all([store.execute(sql`SELECT 1`), store.execute(sql`SELECT 1`)]);
    proxy.blackhole();
    const started = Date.now();
    const failed = await store
      .transaction(async (tx) => executeIn(tx, sql`SELECT 1 AS one`))
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    const waited = Date.now() - started;
    expect(failed).toBeInstanceOf(BackendUnavailableError);
    expect(waited).toBeLessThan(15_000);
    proxy.restore();
    // The silent connections were dropped: new ones answer.
    await expect
      .poll(
        () =>
          store
            .transaction(async (tx) => executeIn(tx, sql`SELECT 1 AS one`))
            .then(
              (rows) => rows[0]?.['one'],
              () => undefined,
            ),
        { timeout: 20_000, interval: 200 },
      )
      .toBe(1);
    expect(await store.ping()).toBe(true);
  });
});
