// Baton's tables in a schema of their own: created there on a fresh store, moved there from public on an old
// layout (data kept), handlers' unqualified tables left in public, a custom name, and two installations side
// by side in one database, on PGlite and on a PostgreSQL server.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { sql } from 'drizzle-orm';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { groupLockKey } from '../../src/cluster/electors/postgres.js';
import { ConfigError } from '../../src/errors.js';
import { EventLog } from '../../src/events/log.js';
import { LEGACY_TABLES } from '../../src/store/baton-schema.js';
import {
  applyMigrations,
  builtinMigrations,
  missingSchema,
  splitStatements,
} from '../../src/store/migrate.js';
import { openPgliteStore } from '../../src/store/pglite.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import pg from 'pg';

import { createTestDatabase, SERVER_URL, type TestDatabase } from '../support/postgres.js';

const silent = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

/** Opens stores on one database; the first call makes the database (a folder, or a server database). */
type Opener = (schema?: string) => Promise<Store>;

const kinds: Array<[string, () => Promise<Opener>]> = [
  [
    'PGlite',
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'baton-schema-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      // One process per PGlite folder: each opener call closes the previous store.
      let open: Store | undefined;
      return async (schema) => {
        await open?.close();
        open = await openPgliteStore(join(dir, 'store'), { schema });
        const store = open;
        cleanups.push(() => store.close());
        return store;
      };
    },
  ],
  [
    'PostgreSQL',
    async () => {
      const database: TestDatabase = await createTestDatabase();
      cleanups.push(() => database.drop());
      return async (schema) => {
        const store = await openPostgresStore(
          {
            kind: 'postgres',
            url: database.url,
            poolSize: 2,
            statementTimeoutMs: 0,
            ...(schema ? { schema } : {}),
          },
          { log: silent, startupTimeoutMs: 5_000 },
        );
        cleanups.push(() => store.close());
        return store;
      };
    },
  ],
];

/** `schema.table` of every table (views aside) in `schemas`. */
async function tablesIn(store: Store, ...schemas: string[]): Promise<string[]> {
  const rows = await store.execute(sql`
    SELECT table_schema || '.' || table_name AS name FROM information_schema.tables
     WHERE table_schema = ANY (${`{${schemas.join(',')}}`}::text[]) AND table_type = 'BASE TABLE'
     ORDER BY 1`);
  return rows.map((row) => String(row['name']));
}

/** Baton's layout before its schema: the built-in migrations up to 0008 applied with their tables in public. */
async function oldLayout(store: Store): Promise<void> {
  const old = (await builtinMigrations()).filter((migration) => migration.id <= 'baton/0008_tasks');
  await store.transaction(async (tx) => {
    await tx.execute(sql.raw('SET LOCAL search_path TO public'));
    await tx.execute(
      sql.raw(
        'CREATE TABLE baton_migrations (id text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
      ),
    );
    for (const migration of old) {
      for (const statement of splitStatements(migration.sql)) await tx.execute(sql.raw(statement));
      await tx.execute(sql`INSERT INTO baton_migrations (id) VALUES (${migration.id})`);
    }
  });
}

/** Tables of Baton's migrations after 0010, created in its schema from the start. */
const LATER_TABLES = [
  'baton_queue_counts',
  'baton_queue_dedup',
  'baton_queue_keys',
  'baton_queue_rates',
  'baton_queue_settings',
  'baton_schedule_state',
  'baton_schedule_ticks',
  'baton_workflow_executions',
];

describe.each(kinds)(
  "Baton's schema (%s)",
  (_kind, makeOpener) => {
    it('creates Baton’s tables in schema baton on a fresh store, none in public', async () => {
      const open = await makeOpener();
      const store = await open();
      await applyMigrations(store, await builtinMigrations());
      const tables = await tablesIn(store, 'baton', 'public');
      expect(tables).toEqual(
        [...LEGACY_TABLES.filter((name) => name !== 'baton_redis_ledger'), ...LATER_TABLES]
          .map((name) => `baton.${name}`)
          .sort(),
      );
      const latest = (await builtinMigrations()).at(-1)?.id ?? '';
      expect(await missingSchema(store, latest)).toBeUndefined();
      // Unqualified names find Baton's tables, whatever the path's default.
      await store.execute(sql`INSERT INTO baton_queue_records (queue, payload) VALUES ('q', '\\x01')`);
      expect(await store.execute(sql`SELECT count(*)::int AS n FROM baton.baton_queue_records`)).toEqual([
        { n: 1 },
      ]);
    });

    it('moves the tables of an old layout from public, keeping their rows, and says so once', async () => {
      const open = await makeOpener();
      const store = await open();
      await oldLayout(store);
      await store.execute(sql`INSERT INTO public.baton_queue_records (queue, payload) VALUES ('q', '\\x01')`);
      await store.execute(
        sql`INSERT INTO public.baton_events ("offset", namespace, key, create_time) VALUES (1, 'default', 'k', now())`,
      );
      const lines: Array<Record<string, unknown>> = [];
      const log = pino(
        { level: 'info' },
        { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
      );

      const applied = await applyMigrations(store, await builtinMigrations(), undefined, { log });

      // What the old layout lacked: the migrations after 0008 only.
      expect(applied).toEqual(
        (await builtinMigrations())
          .map((migration) => migration.id)
          .filter((id) => Number(/\/(\d+)_/.exec(id)?.[1]) > 8),
      );
      expect(applied).toContain('baton/0010_own_schema');
      expect(await tablesIn(store, 'public')).toEqual([]);
      expect(await tablesIn(store, 'baton')).toContain('baton.baton_queue_records');
      const moves = lines.filter((line) => String(line['msg']).includes('moved'));
      expect(moves).toHaveLength(1);
      expect(moves[0]?.['msg']).toBe("store: moved Baton's 12 tables from schema public to schema baton");
      // The queued record survived, and the sequence of its ids came along.
      await store.execute(sql`INSERT INTO baton_queue_records (queue, payload) VALUES ('q', '\\x02')`);
      expect(
        await store.execute(
          sql`SELECT id::int, encode(payload, 'hex') AS payload FROM baton.baton_queue_records ORDER BY id`,
        ),
      ).toEqual([
        { id: 1, payload: '01' },
        { id: 2, payload: '02' },
      ]);
      expect(await store.execute(sql`SELECT key FROM baton.baton_events`)).toEqual([{ key: 'k' }]);
      // A second start finds nothing to move.
      expect(await applyMigrations(store, await builtinMigrations(), undefined, { log })).toEqual([]);
      expect(lines.filter((line) => String(line['msg']).includes('moved'))).toHaveLength(1);
    });

    it("leaves a queue migration's unqualified tables in public", async () => {
      const open = await makeOpener();
      const store = await open();
      await applyMigrations(store, await builtinMigrations());
      await applyMigrations(store, [
        { id: 'items/0001_items', sql: 'CREATE TABLE items (id integer PRIMARY KEY);' },
      ]);
      await store.execute(sql`CREATE TABLE made_by_hand (id integer)`);
      expect(await tablesIn(store, 'public')).toEqual(['public.items', 'public.made_by_hand']);
      expect(await store.execute(sql`SELECT id FROM baton_migrations WHERE id LIKE 'items/%'`)).toEqual([
        { id: 'items/0001_items' },
      ]);
    });

    it('uses the schema named in the config', async () => {
      const open = await makeOpener();
      const store = await open('app_queues');
      await applyMigrations(store, await builtinMigrations());
      expect(await tablesIn(store, 'baton', 'public')).toEqual([]);
      expect(await tablesIn(store, 'app_queues')).toContain('app_queues.baton_events');
      const latest = (await builtinMigrations()).at(-1)?.id ?? '';
      expect(await missingSchema(store, latest)).toBeUndefined();
    });

    it("refuses another installation's tables that come before its own on the search path", async () => {
      const open = await makeOpener();
      const other = await open('public');
      await applyMigrations(other, await builtinMigrations());
      const store = await open();
      // public holds an installation in a schema of its own: its tables are neither moved nor used.
      await expect(applyMigrations(store, await builtinMigrations())).rejects.toThrow(ConfigError);
      await expect(applyMigrations(store, await builtinMigrations())).rejects.toThrow(
        /public\.baton_migrations.* would be used in place of Baton's tables in schema baton/,
      );
      expect(await tablesIn(store, 'baton')).toEqual([]);
    });
  },
  // Each PGlite test opens an embedded database: slow on a busy machine.
  180_000,
);

describe('two installations in one PostgreSQL database', () => {
  it('keep their own tables, records and event logs', async () => {
    const database = await createTestDatabase();
    cleanups.push(() => database.drop());
    const open = async (schema: string): Promise<Store> => {
      const store = await openPostgresStore(
        { kind: 'postgres', url: database.url, schema, poolSize: 2, statementTimeoutMs: 0 },
        { log: silent, startupTimeoutMs: 5_000 },
      );
      cleanups.push(() => store.close());
      await applyMigrations(store, await builtinMigrations());
      return store;
    };
    const [one, two, twoAgain] = [await open('one'), await open('two'), await open('two')];
    await one.execute(sql`INSERT INTO baton_queue_records (queue, payload) VALUES ('q', '\\x01')`);
    expect(await two.execute(sql`SELECT count(*)::int AS n FROM baton_queue_records`)).toEqual([{ n: 0 }]);

    // A follower of two's log hears two's appends only: offsets of one's log would make it skip events.
    const logOne = new EventLog(one, silent);
    const follower = new EventLog(two, silent);
    const appender = new EventLog(twoAgain, silent);
    cleanups.push(
      () => logOne.close(),
      () => follower.close(),
      () => appender.close(),
    );
    await follower.start();
    void follower.waitBeyond(0, { timeoutMs: 60_000 }); // starts listening
    await vi.waitFor(
      async () => {
        await appender.append([{ namespace: 'default', key: 'warm-up' }]);
        expect(follower.head).toBeGreaterThan(0);
      },
      { timeout: 30_000, interval: 200 },
    );
    // Every warm-up append has been heard: the head is the log's last offset.
    const last = async (): Promise<number> =>
      Number((await two.execute(sql`SELECT max("offset") AS n FROM baton_events`))[0]?.['n']);
    await vi.waitFor(async () => expect(follower.head).toBe(await last()), { timeout: 30_000, interval: 50 });
    const before = follower.head;
    await logOne.append(Array.from({ length: 20 }, (_, i) => ({ namespace: 'default', key: `one-${i}` })));
    await appender.append([{ namespace: 'default', key: 'two' }]);
    await vi.waitFor(() => expect(follower.head).toBeGreaterThan(before), { timeout: 30_000, interval: 50 });
    // Notifications come in commit order: one's would have arrived first, and raised the head to 20.
    expect(follower.head).toBe(before + 1);
  });
});

describe('a role that may not create schemas', () => {
  it('uses the schema made for it', async () => {
    const database = await createTestDatabase();
    cleanups.push(() => database.drop());
    const role = `${database.name}_r`;
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    cleanups.push(async () => {
      await database.drop();
      const server = new pg.Client({ connectionString: SERVER_URL });
      await server.connect();
      await server.query(`DROP ROLE IF EXISTS ${role}`).finally(() => server.end());
    });
    try {
      await admin.query(`CREATE ROLE ${role} LOGIN`);
      await admin.query(`CREATE SCHEMA baton AUTHORIZATION ${role}`);
      await admin.query(`GRANT USAGE, CREATE ON SCHEMA public TO ${role}`);
    } finally {
      await admin.end();
    }
    const url = new URL(database.url);
    url.username = role;
    const store = await openPostgresStore(
      { kind: 'postgres', url: url.toString(), poolSize: 2, statementTimeoutMs: 0 },
      { log: silent, startupTimeoutMs: 5_000 },
    );
    cleanups.push(() => store.close());
    await applyMigrations(store, await builtinMigrations());
    expect(await tablesIn(store, 'baton')).toContain('baton.baton_queue_records');
    // The role may not create schemas: the check above did not depend on it.
    await expect(store.execute(sql`CREATE SCHEMA other`)).rejects.toThrow(/permission denied/);
  });
});

describe("the postgres elector's lock key", () => {
  it('stays what it was in the default schema, and is apart in another', () => {
    // The key of versions before Baton's schema: nodes of one group must agree on it across an upgrade.
    expect(groupLockKey('hermes')).toBe(groupLockKey('hermes', 'baton'));
    expect(groupLockKey('hermes', 'baton')).toBe(2_382_424_170_189_231_644n);
    expect(groupLockKey('hermes', 'other')).not.toBe(groupLockKey('hermes'));
  });
});
