// Baton's outbox on PostgreSQL: records enqueued in the application's own transaction, through a
// node-postgres client and through a drizzle transaction, exist if and only if that transaction commits; a
// node (here in this process, on the same database) processes the committed ones once, and is woken by the
// NOTIFY of the commit.
import { fileURLToPath } from 'node:url';

import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { enqueue, startNode } from '../../src/index.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import { waitFor } from '../tasks/support.js';

const HANDLER = fileURLToPath(new URL('../fixtures/items-handler.ts', import.meta.url));

let database: TestDatabase;
let node: BatonNode;
let client: pg.Client;

beforeAll(async () => {
  database = await createTestDatabase();
  node = await startNode({
    node: { name: 'outbox', shutdown_timeout_ms: 3000 },
    log: { level: 'silent' },
    http: { enabled: false },
    store: { url: database.url },
    queues: { items: { handler: HANDLER } },
  });
  client = new pg.Client({ connectionString: database.url });
  await client.connect();
}, 120_000);

afterAll(async () => {
  await client?.end();
  await node?.stop();
  await database?.drop();
});

async function names(): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>('SELECT name FROM items ORDER BY name');
  return rows.map((row) => row.name);
}

async function waiting(): Promise<number> {
  const { rows } = await client.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM baton.baton_queue_records WHERE queue = 'items'`,
  );
  return rows[0]?.n ?? -1;
}

describe('enqueue() in the application’s transaction', () => {
  it('a rollback leaves no record; a commit is processed once', async () => {
    await client.query('CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY)');
    await client.query('BEGIN');
    await client.query('INSERT INTO orders VALUES (1)');
    expect(await enqueue(client, 'items', ['rolled-back'])).toBe(1);
    await client.query('ROLLBACK');
    expect(await waiting()).toBe(0);

    await client.query('BEGIN');
    await client.query('INSERT INTO orders VALUES (2)');
    await enqueue(client, 'items', ['two', Buffer.from('three')]);
    // Not visible to the node before the commit.
    const other = new pg.Client({ connectionString: database.url });
    await other.connect();
    try {
      const { rows } = await other.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM baton.baton_queue_records WHERE queue = 'items'`,
      );
      expect(rows[0]?.n).toBe(0);
    } finally {
      await other.end();
    }
    await client.query('COMMIT');
    await waitFor(async () => (await names()).length >= 2 || undefined, 60_000, 'the two records processed');
    await waitFor(async () => (await waiting()) === 0 || undefined, 60_000, 'the records acknowledged');
    expect(await names()).toEqual(['three', 'two']);
  });

  it('takes a drizzle transaction, and a delay', async () => {
    const db = drizzle(client);
    await db.transaction(async (tx) => {
      await enqueue(tx, 'items', ['drizzle']);
      await enqueue(tx, 'items', ['later'], { delayMs: 500 });
    });
    await waitFor(async () => (await names()).includes('drizzle') || undefined, 60_000, 'the drizzle record');
    const { rows } = await client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM baton.baton_queue_records WHERE queue = 'items' AND run_after > now()`,
    );
    // The delayed one is either still waiting or already processed, never processed early.
    if (rows[0]?.n === 0) expect(await names()).toContain('later');
    await waitFor(async () => (await names()).includes('later') || undefined, 60_000, 'the delayed record');
    await expect(
      db.transaction(async (tx) => {
        await enqueue(tx, 'items', ['never']);
        throw new Error('the application changes its mind');
      }),
    ).rejects.toThrow(/changes its mind/);
    expect(await names()).not.toContain('never');
  });

  it('refuses a bad queue name, schema or delay before touching the transaction', async () => {
    await expect(enqueue(client, 'bad name', ['x'])).rejects.toThrow(/invalid queue name/);
    await expect(enqueue(client, 'items', ['x'], { schema: 'Bad-Schema' })).rejects.toThrow(/invalid schema/);
    await expect(enqueue(client, 'items', ['x'], { delayMs: -1 })).rejects.toThrow(/delayMs/);
    await expect(enqueue(client, 'items', ['x'], { delayMs: 1, runAt: new Date() })).rejects.toThrow(
      /not both/,
    );
    expect(await enqueue(client, 'items', [])).toBe(0);
  });
});
