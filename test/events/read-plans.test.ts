// The plans of event reads on a log without statistics (PostgreSQL with autovacuum off before an ANALYZE;
// PGlite always): each must walk an index in order from its offset and stop at its limit, never scan the
// log or sort all of a namespace's events. Checked with EXPLAIN on both stores.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { matching, WALK_INDEXES } from '../../src/events/log.js';
import type { EventQuery } from '../../src/events/types.js';
import { createLogger } from '../../src/log.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { executeIn } from '../../src/store/store.js';
import { openTempStore } from '../support/pglite.js';
import { createTestDatabase } from '../support/postgres.js';

const log = createLogger({ level: 'silent' });
const EVENTS = 50_000;

const stores: Array<[string, () => Promise<{ store: Store; dispose(): Promise<void> }>]> = [
  ['pglite', openTempStore],
  [
    'postgres',
    async () => {
      const database = await createTestDatabase();
      const store = await openPostgresStore(
        { kind: 'postgres', url: database.url, poolSize: 2, statementTimeoutMs: 0 },
        { log, startupTimeoutMs: 5_000, applicationName: 'baton-test' },
      );
      await applyMigrations(store, await builtinMigrations());
      return {
        store,
        async dispose() {
          await store.close();
          await database.drop();
        },
      };
    },
  ],
];

describe.each(stores)('event read plans without statistics on %s', (_kind, open) => {
  let opened: Awaited<ReturnType<typeof open>>;

  beforeAll(async () => {
    opened = await open();
    // One event in a thousand in the namespace "rare"; 997 keys, and "hot" once every 10,000 events.
    await opened.store.execute(sql`
      INSERT INTO baton_events ("offset", namespace, key, value, create_time)
      SELECT g, CASE WHEN g % 1000 = 7 THEN 'rare' ELSE 'default' END,
             CASE WHEN g % 10000 = 3 THEN 'hot' ELSE 'k' || (g % 997) END, 'v', now()
      FROM generate_series(1, ${EVENTS}) g`);
    await opened.store.execute(sql`UPDATE baton_event_head SET last_offset = ${EVENTS}, last_time = now()`);
  }, 60_000);

  afterAll(async () => {
    await opened.dispose();
  });

  async function plan(query: EventQuery): Promise<string> {
    // In a transaction set up as the log sets up its reads.
    const rows = await opened.store.transaction(async (tx) => {
      await executeIn(tx, WALK_INDEXES);
      return executeIn(tx, sql`EXPLAIN ${matching(query, query.limit ?? 1000, { ordered: true })}`);
    });
    return rows.map((row) => String(Object.values(row)[0])).join('\n');
  }

  it('has no statistics to plan with', async () => {
    const rows = await opened.store.execute(
      sql`SELECT count(*)::int AS n FROM pg_stats WHERE tablename = 'baton_events'`,
    );
    expect(rows[0]?.['n']).toBe(0);
  });

  it('walks (namespace, key, offset) for one key, in order, from the offset', async () => {
    const text = await plan({ namespace: 'default', keys: ['hot'], after: 5_000, limit: 100 });
    expect(text).toMatch(/Index Scan using baton_events_namespace_key/);
    expect(text).toMatch(/Index Cond: .*key = 'hot'.*"offset" > /);
    expect(text).not.toMatch(/Seq Scan|Bitmap|Sort/);
  });

  it('walks (namespace, key, offset) once per key for several keys, with or without a namespace', async () => {
    for (const query of [
      { namespace: 'default', keys: ['hot', 'k5', 'k6'], after: 5_000 },
      { keys: ['hot', 'k5'], after: 5_000 },
    ]) {
      const text = await plan(query);
      expect(text).toMatch(/Index Scan using baton_events_namespace_key/);
      expect(text).toMatch(/Index Cond: .*key = k\.key/);
      expect(text).not.toMatch(/Seq Scan|Bitmap|ANY/);
    }
  });

  it('walks (namespace, offset) for a namespace, rare or not, in order without sorting', async () => {
    for (const namespace of ['rare', 'default']) {
      const text = await plan({ namespace, after: 1_000, to: 40_000, limit: 1000 });
      expect(text).toMatch(/Index Scan using baton_events_namespace_offset/);
      expect(text).not.toMatch(/Seq Scan|Bitmap|Sort/);
    }
  });

  it('walks the primary key when nothing but offsets is asked', async () => {
    const text = await plan({ after: 1_000, to: 2_000 });
    expect(text).toMatch(/Index Scan using baton_events_pkey/);
    expect(text).not.toMatch(/Seq Scan|Bitmap|Sort/);
  });
});
