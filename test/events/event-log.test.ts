// The event log on PGlite and on PostgreSQL: offsets, idempotent producers, queries, time → offset, listener
// offsets, and ordering under concurrent producers (a follower never skips or repeats an offset).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { EventLog } from '../../src/events/log.js';
import type { StoredEvent } from '../../src/events/types.js';
import { createLogger } from '../../src/log.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { openTempStore } from '../support/pglite.js';
import { createTestDatabase } from '../support/postgres.js';

const log = createLogger({ level: 'silent' });

interface Opened {
  store: Store;
  dispose(): Promise<void>;
}

const stores: Array<[string, () => Promise<Opened>]> = [
  ['pglite', openTempStore],
  [
    'postgres',
    async () => {
      const database = await createTestDatabase();
      const store = await openPostgresStore(
        { kind: 'postgres', url: database.url, poolSize: 8, statementTimeoutMs: 0 },
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

describe.each(stores)('event log on %s', (_kind, open) => {
  let opened: Opened;
  let events: EventLog;

  beforeAll(async () => {
    opened = await open();
    events = new EventLog(opened.store, log);
    await events.start();
  });

  afterAll(async () => {
    await events.close();
    await opened.dispose();
  });

  it('assigns increasing offsets and keeps what was sent', async () => {
    const before = await events.latestOffset();
    const sent = await events.append([
      { key: 'a', value: '1', context: '{"run":1}', sender: 's' },
      { key: 'b', namespace: 'other' },
    ]);
    expect(sent.map((event) => event.offset)).toEqual([before + 1, before + 2]);
    expect(sent[0]).toMatchObject({ namespace: 'default', key: 'a', value: '1', context: '{"run":1}' });
    expect(sent[1]).toMatchObject({ namespace: 'other', key: 'b', value: null, duplicate: false });
    const listed = await events.list({ after: before });
    expect(listed.map((event) => event.key)).toEqual(['a', 'b']);
    expect(listed[0]?.createTime).toBe(sent[0]?.createTime);
    expect(events.head).toBe(before + 2);
  });

  it('ignores a resend of the same client id and sequence number', async () => {
    const first = await events.append([{ key: 'k', value: 'v', clientId: 'c1', seq: 7 }]);
    const again = await events.append([
      { key: 'k', value: 'v', clientId: 'c1', seq: 7 },
      { key: 'k', value: 'w', clientId: 'c1', seq: 8 },
      { key: 'k', value: 'w', clientId: 'c1', seq: 8 },
    ]);
    expect(again[0]).toMatchObject({ offset: first[0]?.offset, duplicate: true });
    expect(again[1]?.duplicate).toBe(false);
    expect(again[2]).toMatchObject({ offset: again[1]?.offset, duplicate: true });
    expect(await events.count({ sender: undefined, keys: ['k'] })).toEqual({ count: 2, capped: false });
  });

  it('filters by namespace, keys, sender and offsets, in offset order', async () => {
    const base = await events.latestOffset();
    await events.append(
      Array.from({ length: 20 }, (_, index) => ({
        key: `f${index % 3}`,
        namespace: index % 2 === 0 ? 'even' : 'odd',
        sender: index < 10 ? 'low' : 'high',
      })),
    );
    const even = await events.list({ namespace: 'even', after: base });
    expect(even).toHaveLength(10);
    expect(isAscending(even)).toBe(true);
    const keyed = await events.list({ after: base, keys: ['f0', 'f1'], sender: 'high', limit: 3 });
    expect(keyed.map((event) => [event.key, event.sender])).toEqual([
      ['f1', 'high'],
      ['f0', 'high'],
      ['f1', 'high'],
    ]);
    expect(await events.count({ after: base, to: base + 5 })).toEqual({ count: 5, capped: false });
  });

  it('reads keys with and without a namespace in offset order, and counts up to a cap', async () => {
    const base = await events.latestOffset();
    await events.append(
      Array.from({ length: 30 }, (_, index) => ({
        key: `kr${index % 3}`,
        namespace: ['kr-a', 'kr-b'][index % 2]!,
        value: String(index),
      })),
    );
    const values = (listed: readonly StoredEvent[]) => listed.map((event) => Number(event.value));
    // One key of one namespace; several keys; keys across namespaces: each merged in offset order.
    expect(values(await events.list({ namespace: 'kr-a', keys: ['kr0'], after: base }))).toEqual([
      0, 6, 12, 18, 24,
    ]);
    const two = await events.list({ namespace: 'kr-a', keys: ['kr0', 'kr1', 'kr0'], after: base, limit: 6 });
    expect(values(two)).toEqual([0, 4, 6, 10, 12, 16]);
    const across = await events.list({ keys: ['kr0'], after: base, limit: 7 });
    expect(values(across)).toEqual([0, 3, 6, 9, 12, 15, 18]);
    expect(values(await events.list({ keys: ['kr1', 'kr2'], after: base + 25 }))).toEqual([25, 26, 28, 29]);
    expect(values(await events.list({ namespace: 'kr-b', after: base + 20, to: base + 26 }))).toEqual([
      21, 23, 25,
    ]);

    expect(await events.count({ keys: ['kr0'], after: base })).toEqual({ count: 10, capped: false });
    expect(await events.count({ namespace: 'kr-b', after: base }, 15)).toEqual({ count: 15, capped: true });
    expect(await events.count({ namespace: 'kr-b', after: base }, 16)).toEqual({ count: 15, capped: false });
    expect(await events.count({ keys: ['kr0', 'kr1'], after: base }, 4)).toEqual({ count: 4, capped: true });
  });

  it('tells listener lags from offsets, and counts events behind only when asked, up to a cap', async () => {
    const base = await events.latestOffset();
    await events.append(
      Array.from({ length: 12 }, (_, index) => ({
        key: 'l',
        namespace: index < 3 ? 'lag-rare' : 'lag-busy',
      })),
    );
    const head = await events.latestOffset();
    await events.commitListenerOffset('lag-rare', 'slow', base);
    await events.commitListenerOffset('lag-busy', 'slow', base + 5);
    const byName = (lags: Awaited<ReturnType<EventLog['listenerLags']>>) =>
      Object.fromEntries(
        lags.filter((lag) => lag.namespace.startsWith('lag-')).map((lag) => [lag.namespace, lag]),
      );
    expect(byName(await events.listenerLags())).toEqual({
      'lag-busy': { namespace: 'lag-busy', name: 'slow', lag: head - base - 5 },
      'lag-rare': { namespace: 'lag-rare', name: 'slow', lag: head - base },
    });
    const counted = byName(await events.listenerLags({ countUpTo: 5 }));
    expect(counted['lag-rare']).toMatchObject({ eventsBehind: 3, eventsBehindCapped: false });
    expect(counted['lag-busy']).toMatchObject({ eventsBehind: 5, eventsBehindCapped: true });
  });

  it('turns a time into the offset of the last event at or before it', async () => {
    const [early] = await events.append([{ key: 't1' }]);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const [late] = await events.append([{ key: 't2' }]);
    expect(await events.offsetAt(early?.createTime ?? 0)).toBe(early?.offset);
    expect(await events.offsetAt((late?.createTime ?? 0) - 1)).toBe(early?.offset);
    expect(await events.offsetAt(new Date(0))).toBe(0);
  });

  it('keeps a named listener offset that never moves back', async () => {
    expect(await events.listenerOffset('default', 'reader')).toBeUndefined();
    await events.commitListenerOffset('default', 'reader', 10);
    await events.commitListenerOffset('default', 'reader', 4);
    expect(await events.listenerOffset('default', 'reader')).toBe(10);
    expect(await events.listenerOffset('other', 'reader')).toBeUndefined();
  });

  it('refuses bad events with a message naming the field', async () => {
    await expect(events.append([{ key: '' }])).rejects.toThrow(/event\.key/);
    await expect(events.append([{ key: 'x', namespace: 'a b' }])).rejects.toThrow(/namespace/);
    await expect(events.append([{ key: 'x', context: '{oops' }])).rejects.toThrow(/JSON/);
    await expect(events.append([{ key: 'x\u0000' }])).rejects.toThrow(/NUL/);
    await expect(events.list({ after: -1 })).rejects.toThrow(/from/);
  });

  it('gives followers every offset once, in order, under concurrent producers', async () => {
    const start = await events.latestOffset();
    const abort = new AbortController();
    const seen: number[] = [];
    const producers = 6;
    const perProducer = 40;
    const following = (async () => {
      for await (const batch of events.follow({ after: start, namespace: 'race' }, abort.signal)) {
        seen.push(...batch.map((event) => event.offset));
        if (seen.length >= producers * perProducer) abort.abort();
      }
    })();
    await Promise.all(
      Array.from({ length: producers }, async (_, producer) => {
        for (let index = 0; index < perProducer; index++) {
          await events.append([{ key: `p${producer}`, namespace: 'race', value: String(index) }]);
        }
      }),
    );
    await following;
    expect(seen).toHaveLength(producers * perProducer);
    expect(new Set(seen).size).toBe(seen.length);
    expect(isAscending(seen.map((offset) => ({ offset }) as StoredEvent))).toBe(true);
  });
});

function isAscending(events: readonly StoredEvent[]): boolean {
  return events.every((event, index) => index === 0 || event.offset > (events[index - 1]?.offset ?? 0));
}
