// Property-based fuzzing of the events API: random bodies for POST /v1/events (shapes, keys, namespaces,
// contexts, producer ids) and random query strings for the reads (keys, namespaces, offsets, times). Every
// answer is 2xx or a 4xx with a message, never 5xx; a refused append stores nothing (all or nothing per
// request); and what was accepted is in the log exactly once, in order.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';

const RUNS = Number(process.env['FUZZ_RUNS'] ?? 200);
let dir: string;
let node: BatonNode;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-fuzz-events-'));
  node = await startNode(
    {
      node: { name: 'fuzz-events', data_dir: dir },
      http: { port: 0, body_limit_bytes: 65_536 },
      events: { max_batch: 20 },
    },
    { log: createLogger({ level: 'silent' }) },
  );
});

afterAll(async () => {
  await node.stop();
  await rm(dir, { recursive: true, force: true });
});

const text = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.constantFrom('', ' ', '\u0000', 'a\u0000b', "'; DROP TABLE baton_events; --", '*', 'default', '../x'),
  fc.string({ minLength: 1000, maxLength: 1100 }),
);
const event = fc.record(
  {
    key: fc.oneof(text, fc.integer(), fc.constant(null)),
    value: fc.oneof(text, fc.constant(null), fc.integer()),
    namespace: fc.oneof(text, fc.constantFrom('default', 'fuzz', 'a.b:c/d-e')),
    context: fc.oneof(fc.json(), text, fc.constant(null), fc.dictionary(fc.string(), fc.integer())),
    sender: fc.oneof(text, fc.constant(null)),
    client_id: fc.oneof(fc.constantFrom('client-a', 'client-b'), text),
    seq: fc.oneof(fc.nat({ max: 30 }), fc.integer(), fc.double(), fc.string()),
  },
  { requiredKeys: [] },
);
const body = fc.oneof(
  event,
  fc.array(event, { maxLength: 25 }),
  fc.record({ events: fc.array(event, { maxLength: 25 }) }),
  fc.anything(),
);
const query = fc.dictionary(
  fc.constantFrom('namespace', 'keys', 'key', 'sender', 'from', 'to', 'limit', 'time', 'extra'),
  fc.oneof(
    text,
    fc.integer().map(String),
    fc.date({ noInvalidDate: true }).map((date) => date.toISOString()),
  ),
  { maxKeys: 5 },
);
const readPath = fc.constantFrom('/v1/events', '/v1/events/count', '/v1/events/offset-at', '/v1/events/head');

async function call(
  method: string,
  path: string,
  payload?: unknown,
): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${node.address}${path}`, {
    method,
    ...(payload === undefined
      ? {}
      : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) ?? 'null' }),
  });
  return { status: response.status, body: await response.json() };
}

describe('fuzzing the events API', () => {
  it('appends all of a request or none of it, answering 201 or a 4xx with a message', async () => {
    await fc.assert(
      fc.asyncProperty(body, async (payload) => {
        const before = await node.events?.latestOffset();
        const answer = await call('POST', '/v1/events', payload);
        expect(answer.status, JSON.stringify(answer.body)).toBeLessThan(500);
        const after = await node.events?.latestOffset();
        if (answer.status === 201) {
          const events = (answer.body as { events: Array<{ offset: number; duplicate: boolean }> }).events;
          const fresh = events.filter((stored) => !stored.duplicate).length;
          expect((after ?? 0) - (before ?? 0)).toBe(fresh);
        } else {
          expect(answer.status).toBeGreaterThanOrEqual(400);
          expect((answer.body as { error?: unknown }).error).toEqual(expect.any(String));
          expect(after).toBe(before);
        }
      }),
      { numRuns: RUNS },
    );
    // What was stored is in offset order with no gap and no producer id twice.
    const all = await node.admin.sql(
      `SELECT count(*)::int AS n, count(DISTINCT "offset")::int AS offsets, max("offset")::int AS top,
              count(client_id)::int AS keyed, count(DISTINCT (client_id, client_seq)) FILTER (WHERE client_id IS NOT NULL)::int AS distinct_keyed
       FROM baton_events`,
    );
    const row = all.rows[0] ?? {};
    expect(row['n']).toBe(row['offsets']);
    expect(row['keyed']).toBe(row['distinct_keyed']);
  });

  it('answers reads with random filters with 200 or a 4xx with a message', async () => {
    await fc.assert(
      fc.asyncProperty(readPath, query, async (path, params) => {
        const search = new URLSearchParams(params);
        const answer = await call('GET', `${path}?${search.toString()}`);
        expect(answer.status, `${path}?${search.toString()}: ${JSON.stringify(answer.body)}`).toBeLessThan(
          500,
        );
        if (answer.status >= 400)
          expect((answer.body as { error?: unknown }).error).toEqual(expect.any(String));
      }),
      { numRuns: RUNS },
    );
    expect(await node.ready()).toBe(true);
  });
});
