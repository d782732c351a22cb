// Membership in the store: heartbeats upsert a member, list() keeps those seen within a window by the
// database's clock, leave() removes one. The same suite runs on PostgreSQL and PGlite.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { StoreMembership } from '../../src/cluster/membership-store.js';
import { createLogger } from '../../src/log.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { openTempStore } from '../support/pglite.js';
import { createTestDatabase } from '../support/postgres.js';

interface Backend {
  readonly store: Store;
  dispose(): Promise<void>;
}

const backends: Record<string, () => Promise<Backend>> = {
  postgres: async () => {
    const database = await createTestDatabase();
    const store = await openPostgresStore(
      { kind: 'postgres', url: database.url, poolSize: 2, statementTimeoutMs: 0 },
      { log: createLogger({ level: 'silent' }), startupTimeoutMs: 5000 },
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
  pglite: async () => {
    const temp = await openTempStore();
    return { store: temp.store, dispose: () => temp.dispose() };
  },
};

describe.each(Object.entries(backends))('store membership on %s', (_name, open) => {
  let backend: Backend;

  beforeAll(async () => {
    backend = await open();
  });

  afterAll(async () => {
    await backend?.dispose();
  });

  it('records heartbeats, lists members by name, and forgets one that leaves', async () => {
    const members = new StoreMembership(backend.store, 'g1');
    await members.heartbeat({ node: 'b', address: 'http://b:8080', role: 'secondary', term: 3 });
    await members.heartbeat({ node: 'a', address: undefined, role: 'primary', term: 3 });
    // Another group's members are not this group's.
    await new StoreMembership(backend.store, 'other').heartbeat({
      node: 'z',
      address: undefined,
      role: 'primary',
      term: 9,
    });

    const listed = await members.list(60_000);
    expect(listed.map(({ node, address, role, term }) => ({ node, address, role, term }))).toEqual([
      { node: 'a', address: undefined, role: 'primary', term: 3 },
      { node: 'b', address: 'http://b:8080', role: 'secondary', term: 3 },
    ]);
    for (const member of listed) {
      expect(member.lastSeen).toBeInstanceOf(Date);
      expect(Math.abs(member.lastSeen.getTime() - Date.now())).toBeLessThan(60_000);
    }

    // A later heartbeat replaces what the node reported.
    await members.heartbeat({ node: 'b', address: 'http://b:9090', role: 'primary', term: 4 });
    const b = (await members.list(60_000)).find((member) => member.node === 'b');
    expect(b).toMatchObject({ address: 'http://b:9090', role: 'primary', term: 4 });

    await members.leave('a');
    expect((await members.list(60_000)).map((member) => member.node)).toEqual(['b']);
    await members.close();
  });

  it('drops a member not seen within the window, by the database clock', async () => {
    const members = new StoreMembership(backend.store, 'g2');
    await members.heartbeat({ node: 'fresh', address: undefined, role: 'secondary', term: 0 });
    await members.heartbeat({ node: 'stale', address: undefined, role: 'primary', term: 1 });
    // Age one member on the server's clock rather than sleeping.
    await backend.store.execute(
      sql`UPDATE baton_members SET last_seen = now() - interval '10 seconds' WHERE group_name = 'g2' AND node = 'stale'`,
    );

    expect((await members.list(5_000)).map((member) => member.node)).toEqual(['fresh']);
    expect((await members.list(60_000)).map((member) => member.node)).toEqual(['fresh', 'stale']);

    // A heartbeat brings it back.
    await members.heartbeat({ node: 'stale', address: undefined, role: 'secondary', term: 2 });
    expect((await members.list(5_000)).map((member) => member.node)).toEqual(['fresh', 'stale']);
  });
});
