// Baton's outbox for the event log on PostgreSQL: events sent in the application's own transaction, through a
// node-postgres client and a drizzle transaction, exist if and only if it commits, with the next offsets; a
// listener of a node (here in this process, on the same database) gets them once. An append of the node that
// comes while the application's transaction is open waits for its commit and takes the offset after it, so a
// follower sees them in offset order. Bad input is refused before anything is sent.
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode, EventLog, StoredEvent } from '../../src/index.js';
import { EventClient, sendEvent, startNode } from '../../src/index.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import { waitFor } from '../tasks/support.js';

const NAMESPACE = 'orders';

let database: TestDatabase;
let node: BatonNode;
let client: pg.Client;
let listener: EventClient;
/** The server process of the application's connection. */
let applicationPid: number;
/** Every event of NAMESPACE the node's listener got, in the order it got them. */
const heard: StoredEvent[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  node = await startNode({
    node: { name: 'outbox-events', shutdown_timeout_ms: 3000 },
    log: { level: 'silent' },
    http: { enabled: false },
    store: { url: database.url },
  });
  client = new pg.Client({ connectionString: database.url });
  await client.connect();
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  applicationPid = rows[0]?.pid ?? -1;
  listener = new EventClient(node, { namespace: NAMESPACE, env: {} });
  await listener.registerListener((events) => void heard.push(...events), undefined, { from: 'latest' });
}, 120_000);

afterAll(async () => {
  await listener?.close();
  await client?.end();
  await node?.stop();
  await database?.drop();
});

function log(): EventLog {
  if (!node.events) throw new Error('the node has no event log');
  return node.events;
}

/** Stored events of NAMESPACE with `key`, read by another connection than the application's. */
async function stored(key: string): Promise<StoredEvent[]> {
  return log().list({ namespace: NAMESPACE, keys: [key] });
}

async function heardOf(key: string, count: number): Promise<StoredEvent[]> {
  return waitFor(
    () => {
      const matching = heard.filter((event) => event.key === key);
      return Promise.resolve(matching.length >= count ? matching : undefined);
    },
    60_000,
    `the listener hears ${count} × ${key}`,
  );
}

describe('sendEvent() in the application’s transaction', () => {
  it('a rollback leaves no event; a commit stores it once with the next offset, and a listener hears it', async () => {
    const head = await log().latestOffset();
    await client.query('CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY)');
    await client.query('BEGIN');
    await client.query('INSERT INTO orders VALUES (1)');
    const ghost = await sendEvent(client, { namespace: NAMESPACE, key: 'order.placed', value: '1' });
    expect(ghost.offset).toBe(head + 1);
    await client.query('ROLLBACK');
    expect(await stored('order.placed')).toEqual([]);
    expect(await log().latestOffset()).toBe(head);

    await client.query('BEGIN');
    await client.query('INSERT INTO orders VALUES (2)');
    const sent = await sendEvent(client, {
      namespace: NAMESPACE,
      key: 'order.placed',
      value: '2',
      context: { order: 2 },
    });
    // The rolled-back offset was never taken: this one is the next.
    expect(sent).toMatchObject({ offset: head + 1, sender: 'outbox', context: '{"order":2}' });
    // Nothing visible to the node before the commit.
    expect(await stored('order.placed')).toEqual([]);
    await client.query('COMMIT');

    expect(await stored('order.placed')).toEqual([sent]);
    expect(await log().latestOffset()).toBe(head + 1);
    const [got] = await heardOf('order.placed', 1);
    expect(got).toEqual(sent);
  });

  it('sends several events in order, with consecutive offsets, and takes a sender', async () => {
    await client.query('BEGIN');
    const sent = await sendEvent(
      client,
      [
        { namespace: NAMESPACE, key: 'batch', value: 'a' },
        { namespace: NAMESPACE, key: 'batch', value: 'b', context: '{"n":2}' },
        { namespace: NAMESPACE, key: 'batch', value: null },
      ],
      { sender: 'billing' },
    );
    await client.query('COMMIT');
    const first = sent[0]?.offset ?? -1;
    expect(sent.map((event) => [event.offset, event.value, event.sender])).toEqual([
      [first, 'a', 'billing'],
      [first + 1, 'b', 'billing'],
      [first + 2, null, 'billing'],
    ]);
    expect(await stored('batch')).toEqual(sent);
    expect(await heardOf('batch', 3)).toEqual(sent);
    expect(await sendEvent(client, [])).toEqual([]);
  });

  it('takes a drizzle transaction; a drizzle rollback leaves nothing', async () => {
    const db = drizzle(client);
    const sent = await db.transaction((tx) => sendEvent(tx, { namespace: NAMESPACE, key: 'drizzle' }));
    expect(await stored('drizzle')).toEqual([sent]);
    expect((await heardOf('drizzle', 1))[0]).toEqual(sent);
    await expect(
      db.transaction(async (tx) => {
        await sendEvent(tx, { namespace: NAMESPACE, key: 'never' });
        throw new Error('the application changes its mind');
      }),
    ).rejects.toThrow(/changes its mind/);
    expect(await stored('never')).toEqual([]);
  });

  it('holds the node’s appends until the application commits, so offsets become visible in order', async () => {
    await client.query('BEGIN');
    const mine = await sendEvent(client, { namespace: NAMESPACE, key: 'ordered', value: 'application' });
    // The node appends meanwhile: its append waits for the head row that the application's transaction holds.
    const theirs = log().append([{ namespace: NAMESPACE, key: 'ordered', value: 'node' }]);
    await waitFor(
      async () => ((await headWaiters()) > 0 ? true : undefined),
      30_000,
      "the node's append waits for the head row",
    );
    await client.query('COMMIT');
    const [appended] = await theirs;
    expect(appended?.offset).toBe(mine.offset + 1);
    const got = await heardOf('ordered', 2);
    expect(got.map((event) => [event.offset, event.value])).toEqual([
      [mine.offset, 'application'],
      [mine.offset + 1, 'node'],
    ]);
  });

  it('in a repeatable-read transaction, fails on an append committed since its snapshot (retry the transaction)', async () => {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await client.query('SELECT count(*) FROM orders'); // takes the snapshot
    await log().append([{ namespace: NAMESPACE, key: 'between' }]);
    await expect(sendEvent(client, { namespace: NAMESPACE, key: 'late' })).rejects.toMatchObject({
      code: '40001',
    });
    await client.query('ROLLBACK');
    expect(await stored('late')).toEqual([]);
  });

  it('refuses bad input with the HTTP API’s words, before touching the transaction', async () => {
    const head = await log().latestOffset();
    await client.query('BEGIN');
    const refusals: Array<[unknown, RegExp]> = [
      [{ key: '' }, /event\.key: expected a non-empty string/],
      [{ key: 'x', namespace: 'bad namespace' }, /event\.namespace: invalid namespace/],
      [{ key: 'x', value: 'v'.repeat(1_048_577) }, /event\.value: larger than 1048576 bytes/],
      [{ key: 'x', context: '{not json' }, /event\.context: expected a JSON text/],
      [{ key: 'x', value: 'a\u0000b' }, /event\.value: contains a NUL character/],
      [[{ key: 'ok' }, { key: 'x', sender: 'me' } as never], /events\[1\]\.sender: unknown field/],
      [[{ key: 'ok' }, 'text' as never], /events\[1\]: expected an object/],
    ];
    for (const [input, message] of refusals) {
      await expect(sendEvent(client, input as never)).rejects.toThrow(message);
    }
    await expect(sendEvent(client, { key: 'x' }, { sender: 'baton' })).rejects.toThrow(
      /sender: "baton" is reserved for the node's own events/,
    );
    await expect(sendEvent(client, { key: 'x' }, { schema: 'Bad-Schema' })).rejects.toThrow(/invalid schema/);
    await expect(sendEvent(client, { key: 'x' }, { schema: 'elsewhere' })).rejects.toThrow(
      /relation "elsewhere.baton_event_head" does not exist/,
    );
    // The refusals before it sent nothing: the transaction was usable until the statement the server refused.
    await client.query('ROLLBACK');
    await client.query('BEGIN');
    await sendEvent(client, { namespace: NAMESPACE, key: 'after-refusals' });
    await client.query('COMMIT');
    expect(await log().latestOffset()).toBe(head + 1);
  });
});

/**
 * Sessions waiting for a lock that the application's transaction holds (the event log's head row), seen from
 * another connection (within a transaction, the activity view keeps the picture of its first read).
 */
async function headWaiters(): Promise<number> {
  const observer = new pg.Client({ connectionString: database.url });
  await observer.connect();
  try {
    const { rows } = await observer.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE $1::int = ANY(pg_blocking_pids(pid)) AND query LIKE '%baton_event_head%'`,
      [applicationPid],
    );
    return rows[0]?.n ?? 0;
  } finally {
    await observer.end();
  }
}
