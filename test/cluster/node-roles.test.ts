// The role API of nodes started in-process on the postgres elector: node-role-changed, leader watches,
// manual failover, the fence refusing a deposed primary's write, and primaryOnly routes.
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import type { BatonNode, LeaderWatchEvent, RoleChange } from '../../src/index.js';
import { defineComponent, FencedError, primaryOnly, startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';

const handler = fileURLToPath(new URL('../fixtures/ids-handler.ts', import.meta.url));
const slowHandler = fileURLToPath(new URL('../fixtures/slow-ids-handler.ts', import.meta.url));
let database: TestDatabase;
const nodes: BatonNode[] = [];
/** Where the primary-only component runs now, by node name. */
const running = new Set<string>();

async function start(name: string): Promise<BatonNode> {
  const node = await startNode(
    {
      node: { name, data_dir: `/tmp/baton-roles-${name}` },
      log: { level: 'silent' },
      http: { port: 0 },
      store: { url: database.url, pool_size: 3 },
      group: {
        name: 'roles',
        elector: 'postgres',
        lease_ms: 2000,
        renew_deadline_ms: 1200,
        heartbeat_ms: 100,
      },
      queues: { ids: { handler, run_on: 'primary' } },
    },
    {
      log: createLogger({ level: 'silent' }),
      components: [
        defineComponent({
          name: 'reporter',
          runOn: 'primary',
          start: (ctx) => {
            running.add(name);
            ctx.signal.addEventListener('abort', () => running.delete(name));
          },
          stop: () => undefined,
        }),
      ],
      routes: (app, self) => {
        app.post('/charge', { preHandler: primaryOnly(self) }, () => ({ charged: self.name }));
      },
    },
  );
  nodes.push(node);
  return node;
}

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await Promise.all(nodes.map((node) => node.stop()));
  await database.drop();
});

describe('roles of nodes in a group', () => {
  it('one primary; subscriptions, leader watches, failover, fencing and primary-only routes', async () => {
    const a = await start('a');
    await vi.waitFor(() => expect(a.role).toBe('primary'), { timeout: 10_000 });
    const b = await start('b');
    expect(b.role).toBe('secondary');
    await vi.waitFor(() => expect([...running]).toEqual(['a']));
    // The queue runner is a component too: one role gate for both.
    expect(b.components()).toEqual([
      expect.objectContaining({ name: 'reporter', runOn: 'primary', state: 'stopped' }),
      expect.objectContaining({ name: 'baton.queue.ids', runOn: 'primary', state: 'stopped' }),
    ]);

    const changes: RoleChange[] = [];
    b.subscribe('node-role-changed', (change) => changes.push(change));
    await vi.waitFor(() =>
      expect(changes[0]).toEqual({ previous: null, new: 'secondary', term: a.term, leader: 'a' }),
    );
    const watched: LeaderWatchEvent[] = [];
    b.addLeaderWatch('w', (event) => watched.push(event), 'become-leader');

    // A primary-only route refuses on the secondary and says where the primary is.
    const refused = await fetch(`${b.address}/charge`, { method: 'POST' });
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({
      role: 'secondary',
      primary: { node: 'a', address: a.address },
    });
    expect(await (await fetch(`${a.address}/charge`, { method: 'POST' })).json()).toEqual({ charged: 'a' });

    // Manual failover to b: a yields, b wins with a higher term.
    const oldTerm = a.term;
    await a.admin.failover('b');
    await vi.waitFor(() => expect(b.role).toBe('primary'), { timeout: 10_000 });
    expect(b.term).toBeGreaterThan(oldTerm);
    // The primary-only component moved with the primary.
    await vi.waitFor(() => expect([...running]).toEqual(['b']));
    await vi.waitFor(() => expect(changes.map((c) => c.new)).toEqual(['secondary', 'primary']));
    await vi.waitFor(() => expect(watched).toHaveLength(1));
    expect(watched[0]).toMatchObject({
      key: 'w',
      event: 'become-leader',
      previous: 'secondary',
      new: 'primary',
      term: b.term,
    });

    // a is deposed: its write checked with assertPrimary is refused, and nothing of it commits.
    await vi.waitFor(() => expect(a.role).toBe('secondary'));
    await expect(
      a.transaction(async (tx) => {
        await a.assertPrimary(tx);
      }),
    ).rejects.toBeInstanceOf(FencedError);
    await expect(b.transaction((tx) => b.assertPrimary(tx))).resolves.toBeUndefined();

    const status = await a.admin.cluster();
    expect(status.members.map((m) => [m.node, m.role])).toEqual([
      ['a', 'secondary'],
      ['b', 'primary'],
    ]);
  }, 60_000);

  it('keeps the lease and the members in the group database when group.url is not the store', async () => {
    const coordination = await createTestDatabase();
    const started: BatonNode[] = [];
    try {
      for (const name of ['x', 'y']) {
        started.push(
          await startNode(
            {
              node: { name, data_dir: `/tmp/baton-roles-${name}` },
              log: { level: 'silent' },
              http: { port: 0 },
              store: { url: database.url, pool_size: 2 },
              group: {
                name: 'split',
                elector: 'postgres',
                url: coordination.url,
                lease_ms: 2000,
                heartbeat_ms: 100,
              },
              queues: { ids: { handler } },
            },
            { log: createLogger({ level: 'silent' }) },
          ),
        );
      }
      const [x, y] = started as [BatonNode, BatonNode];
      await vi.waitFor(() => expect([x.role, y.role].sort()).toEqual(['primary', 'secondary']), {
        timeout: 10_000,
      });
      await vi.waitFor(async () =>
        expect((await y.admin.cluster()).members.map((m) => m.node)).toEqual(['x', 'y']),
      );
    } finally {
      await Promise.all(started.map((node) => node.stop()));
      await coordination.drop();
    }
  }, 60_000);

  it('aborts a primary-only queue handler the moment its node steps down; the new primary stores the batch once', async () => {
    const own = await createTestDatabase();
    const started: BatonNode[] = [];
    try {
      const config = (name: string) => ({
        node: { name, data_dir: `/tmp/baton-roles-${name}` },
        log: { level: 'silent' as const },
        http: { port: 0 },
        store: { url: own.url, pool_size: 3 },
        group: { name: 'abort', elector: 'postgres' as const, lease_ms: 2000, heartbeat_ms: 100 },
        queues: { slow: { handler: slowHandler, run_on: 'primary' as const, batch_size: 50 } },
      });
      const p = await startNode(config('p'), { log: createLogger({ level: 'silent' }) });
      started.push(p);
      await vi.waitFor(() => expect(p.role).toBe('primary'), { timeout: 10_000 });
      const q = await startNode(config('q'), { log: createLogger({ level: 'silent' }) });
      started.push(q);
      await p.publish(
        'slow',
        Array.from({ length: 50 }, (_, id) => Buffer.from(JSON.stringify({ id }))),
      );
      await vi.waitFor(async () => expect((await p.admin.queues())[0]?.inFlight).toBe(50), {
        timeout: 10_000,
      });

      const failedOverAt = Date.now();
      await p.admin.failover('q');
      // p's handler sleeps 4 s per batch; the batch must not wait for it.
      await vi.waitFor(async () => expect((await q.admin.queues())[0]?.inFlight).toBe(50), {
        timeout: 3_000,
      });
      expect(Date.now() - failedOverAt).toBeLessThan(3_000);
      await vi.waitFor(
        async () => {
          const rows = await q.admin.sql('SELECT count(*)::int AS n, count(DISTINCT id)::int AS d FROM seen');
          expect(rows.rows[0]).toEqual({ n: 50, d: 50 });
        },
        { timeout: 15_000 },
      );
    } finally {
      await Promise.all(started.map((node) => node.stop()));
      await own.drop();
    }
  }, 60_000);
});
