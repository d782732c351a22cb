// Keys on a running node: an ordered store queue consumed by four loops processes each key's records in
// publish order although some fail once and are retried; records carry keys from code, from HTTP (the
// Baton-Key header and envelope lines), from the HTTP admin, from the outbox, or from the handler's key();
// idempotency ids given over HTTP, by the admin and by the outbox drop a second copy, counted on /v1/queues.
import { fileURLToPath } from 'node:url';

import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { enqueue, HttpAdmin, startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import { waitFor } from '../tasks/support.js';

const HANDLER = fileURLToPath(new URL('../fixtures/keyed-handler.ts', import.meta.url));
const BATCH_HANDLER = fileURLToPath(new URL('../fixtures/keyed-batch-handler.ts', import.meta.url));
const TOKEN = 'keys-token-0123456789';

let database: TestDatabase;
let node: BatonNode;
let client: pg.Client;

beforeAll(async () => {
  database = await createTestDatabase();
  node = await startNode(
    {
      node: { name: 'keys-node', shutdown_timeout_ms: 3000 },
      http: { port: 0, token: TOKEN },
      store: { url: database.url },
      queues: {
        keyed: {
          handler: HANDLER,
          ordering: 'key',
          batch_size: 25,
          concurrency: 4,
          retry_delay_ms: 20,
          retry_max_delay_ms: 200,
        },
        batched: { handler: BATCH_HANDLER, ordering: 'key', batch_size: 50, concurrency: 1 },
      },
    },
    { log: createLogger({ level: 'silent' }) },
  );
  client = new pg.Client({ connectionString: database.url });
  await client.connect();
}, 120_000);

afterAll(async () => {
  await client?.end();
  await node?.stop();
  await database?.drop();
});

interface Row {
  key: string;
  seq: number;
}

async function events(keys: readonly string[]): Promise<Row[]> {
  const { rows } = await client.query<Row>(
    'SELECT key, seq FROM keyed_events WHERE key = ANY($1) ORDER BY id',
    [keys],
  );
  return rows;
}

/** The seqs of each key in the order the handler stored them. */
function byKey(rows: readonly Row[]): Map<string, number[]> {
  const found = new Map<string, number[]>();
  for (const { key, seq } of rows) found.set(key, [...(found.get(key) ?? []), Number(seq)]);
  return found;
}

function ingest(body: string, headers: Record<string, string>): Promise<Response> {
  return fetch(`${node.address ?? ''}/v1/queues/keyed/records`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/x-ndjson', ...headers },
    body,
  });
}

describe('an ordered store queue on a running node', () => {
  it('processes each key in publish order across four consumers while records fail and are retried', async () => {
    const keys = Array.from({ length: 12 }, (_, index) => `order-${index}`);
    const perKey = 40;
    // Publishes of mixed keys, each key's records in seq order; every seventh record fails once.
    for (let seq = 0; seq < perKey; seq += 4) {
      const records = keys.flatMap((key) =>
        [0, 1, 2, 3].map((step) =>
          Buffer.from(`${key}:${seq + step}${(seq + step) % 7 === 3 ? ':fail' : ''}`),
        ),
      );
      await node.publish('keyed', records);
    }
    await waitFor(
      async () => (await events(keys)).length >= keys.length * perKey,
      90_000,
      'every record stored',
    );
    const stored = byKey(await events(keys));
    for (const key of keys) {
      expect(stored.get(key)).toEqual(Array.from({ length: perKey }, (_, seq) => seq));
    }
  });

  it('takes keys from Baton-Key, envelopes, the HTTP admin and the outbox; drops repeated ids', async () => {
    // Baton-Key for a request, Idempotency-Key for its lines (<id>#n): sent twice, stored once.
    const lines = ['h:0', 'h:1', 'h:2'].join('\n');
    for (let round = 0; round < 2; round++) {
      const response = await ingest(lines, { 'baton-key': 'header-key', 'idempotency-key': 'req-1' });
      expect(response.status).toBe(202);
      expect(await response.json()).toEqual({ accepted: 3 });
    }
    // Envelopes name each line's key and id.
    const envelope = [
      { record: 'e:0', key: 'envelope-key', id: 'env-0' },
      { record: 'e:1', key: 'envelope-key', id: 'env-1' },
      { record: 'e:0', key: 'envelope-key', id: 'env-0' },
    ]
      .map((line) => JSON.stringify(line))
      .join('\n');
    expect((await ingest(envelope, { 'baton-envelope': 'json' })).status).toBe(202);
    // The HTTP admin: a key for all, one id per record.
    const admin = new HttpAdmin(node.address ?? '', { token: TOKEN });
    const records = ['a:0', 'a:1'].map((text) => Buffer.from(text));
    expect(await admin.publish('keyed', records, { key: 'admin-key', ids: ['adm-0', 'adm-1'] })).toBe(2);
    expect(await admin.publish('keyed', records, { key: 'admin-key', ids: ['adm-0', 'adm-1'] })).toBe(2);
    // The outbox, in the application's transaction.
    await client.query('BEGIN');
    await enqueue(client, 'keyed', ['o:0', 'o:1'], { key: 'outbox-key', ids: ['out-0', 'out-1'] });
    await client.query('COMMIT');
    await client.query('BEGIN');
    await enqueue(client, 'keyed', ['o:0', 'o:1'], { key: 'outbox-key', ids: ['out-0', 'out-1'] });
    await client.query('COMMIT');

    const keys = ['header-key', 'envelope-key', 'admin-key', 'outbox-key'];
    // The handler names rows by the record's own prefix; the records above carry their key apart from it.
    const prefixes = ['h', 'e', 'a', 'o'];
    await waitFor(async () => (await events(prefixes)).length >= 9, 60_000, 'the keyed records stored');
    const stored = byKey(await events(prefixes));
    expect(Object.fromEntries(stored)).toEqual({ h: [0, 1, 2], e: [0, 1], a: [0, 1], o: [0, 1] });
    // Their keys were kept, and are dropped once drained (by the next claim that finds them empty).
    await waitFor(
      async () => {
        const { rows } = await client.query<{ key: string }>(
          `SELECT key FROM baton.baton_queue_keys WHERE queue = 'keyed' AND key = ANY($1)`,
          [keys],
        );
        return rows.length === 0;
      },
      60_000,
      'the drained keys removed',
    );
    const listed = await fetch(`${node.address}/v1/queues`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const body = (await listed.json()) as { queues: Array<{ name: string; deduplicated?: number }> };
    expect(body.queues.find((queue) => queue.name === 'keyed')?.deduplicated).toBe(3 + 1 + 2 + 2);
  });

  it('gives processBatch the records of a batch grouped by key, with their keys', async () => {
    // Published interleaved: x, y, x, y, …; a batch holds both keys, each key's records together and in order.
    const records = Array.from({ length: 40 }, (_, index) =>
      Buffer.from(`${index % 2 ? 'y' : 'x'}:${index}`),
    );
    const keys = records.map((record) => record.toString('utf8').slice(0, 1));
    await node.ingest('batched', records, { keys });
    const expected = records.length;
    let rows: Array<{ record: string; ctx_key: string | null; call: number; position: number }> = [];
    await waitFor(
      async () => {
        ({ rows } = await client.query(
          'SELECT record, ctx_key, call, position FROM keyed_batches ORDER BY id',
        ));
        return rows.length >= expected;
      },
      60_000,
      'the batched records stored',
    );
    for (const row of rows) expect(row.ctx_key).toBe(row.record.slice(0, 1));
    // Within each call, a key's records are contiguous and in order.
    const calls = new Map<number, string[]>();
    for (const row of rows) calls.set(row.call, [...(calls.get(row.call) ?? []), row.record]);
    for (const call of calls.values()) {
      const callKeys = call.map((record) => record.slice(0, 1));
      const changes = callKeys.filter((key, index) => index > 0 && key !== callKeys[index - 1]).length;
      expect(changes).toBe(new Set(callKeys).size - 1);
      for (const key of new Set(callKeys)) {
        const seqs = call.filter((record) => record.startsWith(key)).map((record) => Number(record.slice(2)));
        expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      }
    }
    // The batch really mixed both keys, so the grouping was done by the runner.
    expect([...calls.values()].some((call) => new Set(call.map((record) => record[0])).size > 1)).toBe(true);
  });

  it('refuses a bad key or id with 400, storing nothing', async () => {
    const tooLong = 'k'.repeat(600);
    expect((await ingest('x:0', { 'baton-key': tooLong })).status).toBe(400);
    const response = await ingest('{"record":"x:0","key":""}', { 'baton-envelope': 'json' });
    expect(response.status).toBe(400);
    expect(await response.text()).toMatch(/line 1: key/);
  });
});
