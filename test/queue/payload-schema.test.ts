// Payload schemas on a running node (embedded store, and a Redis queue): records that parse reach the handler
// with their parsed value (ctx.payload, ctx.payloads); a publish with one that does not is refused whole,
// over HTTP with 400 naming the record and its line, and stores nothing; a record pushed raw to Redis that
// does not parse goes to the error queue with the reason after one attempt, while its neighbours commit.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { BadRequestError, startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import type { TestRedis } from '../support/redis.js';
import { openTestRedis } from '../support/redis.js';

/** Packages as a module in a temp folder imports them: by their file, there being no node_modules around it. */
const ZOD = new URL('../../node_modules/zod/index.js', import.meta.url).href;
const DRIZZLE = new URL('../../node_modules/drizzle-orm/index.js', import.meta.url).href;
const TOKEN = 'payload-token-0123456789';

const PREAMBLE = `import { z } from ${JSON.stringify(ZOD)};
import { sql } from ${JSON.stringify(DRIZZLE)};
export const payload = z.object({ name: z.string(), n: z.number().int() });
`;

/** process(): one row per record, from ctx.payload alone. */
const PROCESS_HANDLER = `${PREAMBLE}
export async function process(tx, record, ctx) {
  await tx.execute(sql\`INSERT INTO payload_rows (queue, name, n, how)
    VALUES (\${ctx.queue}, \${ctx.payload.name}, \${ctx.payload.n}, 'process')\`);
}
`;

/** processBatch(): one row per entry of ctx.payloads, with the record it stands beside. */
const BATCH_HANDLER = `${PREAMBLE}
export async function processBatch(tx, records, ctx) {
  if (ctx.payloads.length !== records.length) throw new Error('one payload per record expected');
  for (const [index, value] of ctx.payloads.entries()) {
    await tx.execute(sql\`INSERT INTO payload_rows (queue, name, n, how, record)
      VALUES (\${ctx.queue}, \${value.name}, \${value.n}, 'batch', \${records[index].toString()})\`);
  }
}
`;

let dir: string;
let node: BatonNode;
let redis: TestRedis;
/** The Redis queue: named under the test's prefix, so that cleanup deletes its error queue too. */
let redisQueue: string;
let serial = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-payload-schema-'));
  await writeFile(join(dir, 'one.mjs'), PROCESS_HANDLER);
  await writeFile(join(dir, 'batch.mjs'), BATCH_HANDLER);
  redis = await openTestRedis();
  redisQueue = redis.queue();
  node = await startNode(
    {
      node: { name: 'payload-node', data_dir: join(dir, 'data') },
      http: { port: 0, token: TOKEN },
      redis: { url: redis.url },
      queues: {
        one: { handler: join(dir, 'one.mjs') },
        batch: { handler: join(dir, 'batch.mjs') },
        [redisQueue]: { handler: join(dir, 'batch.mjs'), backend: 'redis', max_attempts: 5 },
      },
    },
    { log: createLogger({ level: 'silent' }) },
  );
  await node.admin.sql(
    'CREATE TABLE payload_rows (queue text NOT NULL, name text NOT NULL, n int NOT NULL, how text, record text)',
  );
}, 60_000);

afterAll(async () => {
  await node?.stop();
  await redis?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

/** A name no other test uses. */
const unique = (label: string): string => `${label}-${++serial}-${Date.now()}`;
const line = (value: unknown): string => JSON.stringify(value);

async function rowsNamed(names: readonly string[]): Promise<Array<Record<string, unknown>>> {
  const result = await node.admin.sql(
    'SELECT queue, name, n, how, record FROM payload_rows WHERE name = ANY($1) ORDER BY name',
    [names],
  );
  return result.rows.map((row) => ({ ...row }));
}

function post(queue: string, body: string, contentType = 'application/x-ndjson'): Promise<Response> {
  return fetch(`${node.address}/v1/queues/${queue}/records`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': contentType },
    body,
  });
}

async function depth(queue: string): Promise<number | undefined> {
  return (await node.admin.queues()).find((info) => info.name === queue)?.depth;
}

describe('a queue with a payload schema', () => {
  it('gives process() the parsed record, and stores what it writes from it', async () => {
    const [a, b] = [unique('a'), unique('b')];
    const response = await post('one', `${line({ name: a, n: 1 })}\n${line({ name: b, n: 2 })}\n`);
    expect(response.status).toBe(202);
    expect(await response.json()).toEqual({ accepted: 2 });
    await expect.poll(async () => (await rowsNamed([a, b])).length, { timeout: 30_000 }).toBe(2);
    expect(await rowsNamed([a, b])).toEqual([
      { queue: 'one', name: a, n: 1, how: 'process', record: null },
      { queue: 'one', name: b, n: 2, how: 'process', record: null },
    ]);
  });

  it('gives processBatch() ctx.payloads, one per record, in their order', async () => {
    const names = [unique('x'), unique('y'), unique('z')];
    const records = names.map((name, n) => Buffer.from(line({ name, n })));
    expect(await node.publish('batch', records)).toBe(3);
    await expect.poll(async () => (await rowsNamed(names)).length, { timeout: 30_000 }).toBe(3);
    const rows = await rowsNamed(names);
    expect(rows.map((row) => [row['name'], row['n'], row['how']])).toEqual(
      names.map((name, n) => [name, n, 'batch']),
    );
    // Each value stood beside its own record.
    for (const row of rows)
      expect(JSON.parse(String(row['record']))).toEqual({ name: row['name'], n: row['n'] });
  });

  it('refuses over HTTP a record that does not match: 400 with the reason, and stores nothing', async () => {
    const name = unique('bad');
    const response = await post('one', line({ name, n: 'one' }), 'application/json');
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({
      code: 'BAD_REQUEST',
      record: 1,
      error:
        "record 1 of 1: payload does not match the queue's schema: n: Invalid input: expected number, received string",
    });
    expect(await rowsNamed([name])).toEqual([]);
  });

  it('refuses a whole NDJSON request when its 3rd line of 5 is bad, naming the line, and stores none of it', async () => {
    const names = Array.from({ length: 5 }, () => unique('five'));
    const lines = names.map((name, n) => line({ name, n }));
    lines[2] = line({ name: names[2], n: 2.5 });
    const response = await post('one', lines.join('\n'));
    expect(response.status).toBe(400);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ code: 'BAD_REQUEST', record: 3, line: 3 });
    expect(body['error']).toBe(
      "line 3 (record 3 of 5): payload does not match the queue's schema: n: Invalid input: expected int, received number",
    );
    // Refused before anything was stored: neither processed nor waiting in the queue.
    expect(await rowsNamed(names)).toEqual([]);
    expect(await depth('one')).toBe(0);
  });

  it('counts blank lines in the line it names, and says when a line is not JSON', async () => {
    const names = [unique('p'), unique('q')];
    const body = `${line({ name: names[0], n: 1 })}\n\n${line({ name: names[1], n: 2 })}\r\n{"name": oops}\n`;
    const response = await post('batch', body);
    expect(response.status).toBe(400);
    const answer = (await response.json()) as Record<string, unknown>;
    expect(answer).toMatchObject({ record: 3, line: 4 });
    expect(answer['error']).toMatch(/^line 4 \(record 3 of 3\): payload is not JSON: /);
    expect(await rowsNamed(names)).toEqual([]);
  });

  it('refuses a publish in code with BadRequestError naming the record', async () => {
    const name = unique('code');
    const records = [Buffer.from(line({ name, n: 1 })), Buffer.from([0xc3, 0x28])];
    await expect(node.publish('batch', records)).rejects.toThrow(BadRequestError);
    await expect(node.publish('batch', records)).rejects.toThrow(
      /^record 2 of 2: payload is not valid UTF-8/,
    );
    expect(await rowsNamed([name])).toEqual([]);
  });

  it('refuses a publish to a Redis queue the same way', async () => {
    const response = await post(redisQueue, `${line({ name: unique('r'), n: 1 })}\n[]\n`);
    expect(response.status).toBe(400);
    expect(((await response.json()) as Record<string, unknown>)['error']).toMatch(
      /^line 2 \(record 2 of 2\): payload does not match the queue's schema: Invalid input: expected object/,
    );
    expect(await redis.client.llen(redisQueue)).toBe(0);
  });

  it('sends a record pushed raw to Redis that does not parse to the error queue after one attempt; its batch commits', async () => {
    const [first, last] = [unique('raw1'), unique('raw2')];
    const bad = line({ name: unique('raw-bad') });
    // One LPUSH: the runner claims the three together.
    await redis.client.lpush(redisQueue, line({ name: first, n: 1 }), bad, line({ name: last, n: 3 }));
    await expect.poll(async () => (await rowsNamed([first, last])).length, { timeout: 30_000 }).toBe(2);
    await expect
      .poll(async () => (await node.admin.listErrors(redisQueue, { limit: 10 })).length, { timeout: 30_000 })
      .toBe(1);
    const [error] = await node.admin.listErrors(redisQueue, { limit: 10 });
    expect(error?.payload.toString()).toBe(bad);
    expect(error?.attempts).toBe(1);
    expect(error?.error).toBe(
      "payload does not match the queue's schema: n: Invalid input: expected number, received undefined",
    );
    expect(await redis.client.llen(redisQueue)).toBe(0);
  });
});
