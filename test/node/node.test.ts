// A node started in-process with startNode(): ingest from code and over HTTP, inline and queued paths,
// error queue and replay, token checks, and a clean stop.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode, UnknownQueueError } from '../../src/index.js';
import { createLogger } from '../../src/log.js';

const handler = fileURLToPath(new URL('./handlers/words.ts', import.meta.url));
const TOKEN = 'test-token-0123456789';
let dir: string;
let node: BatonNode;

const count = async (where = ''): Promise<number> =>
  Number((await node.admin.sql(`SELECT count(*)::int AS n FROM words ${where}`)).rows[0]?.['n']);

const http = (path: string, init: RequestInit = {}, token: string | null = TOKEN): Promise<Response> =>
  fetch(`${node.address}${path}`, {
    ...init,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(init.headers as Record<string, string>),
    },
  });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-node-'));
  node = await startNode(
    {
      node: { name: 'test-node', data_dir: dir, shutdown_timeout_ms: 5000 },
      http: { port: 0, token: TOKEN, body_limit_bytes: 4096 },
      queues: {
        words: { handler, max_attempts: 2, retry_delay_ms: 50, retry_max_delay_ms: 50, batch_size: 100 },
        queued: { handler, inline: false, max_attempts: 2, retry_delay_ms: 50, retry_max_delay_ms: 50 },
      },
    },
    { log: createLogger({ level: 'silent' }) },
  );
});

afterAll(async () => {
  await node.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('a node started from code', () => {
  it('runs, with its HTTP API ready', async () => {
    expect(node.state).toBe('running');
    expect((await http('/readyz', {}, null)).status).toBe(200);
    expect((await http('/healthz', {}, null)).status).toBe(200);
  });

  it('processes published records inline and sends the bad one to the error queue with its reason', async () => {
    const before = await count();
    const result = await node.ingest(
      'words',
      ['alpha', 'fail', 'beta'].map((w) => Buffer.from(w)),
    );
    expect(result).toEqual({ accepted: 3, processed: 2 });
    expect(await count()).toBe(before + 2);
    await vi.waitFor(
      async () => expect((await node.admin.listErrors('words', { limit: 10 })).length).toBe(1),
      {
        timeout: 10_000,
      },
    );
    const [error] = await node.admin.listErrors('words', { limit: 10 });
    expect(error).toMatchObject({ attempts: 2, payload: Buffer.from('fail') });
    expect(error?.error).toContain('the word "fail" is refused');
  });

  it('takes the queue path when inline is off, and the runner stores every record once', async () => {
    const words = Array.from({ length: 250 }, (_, i) => `q${i}`);
    expect(
      await node.publish(
        'queued',
        words.map((w) => Buffer.from(w)),
      ),
    ).toBe(250);
    await vi.waitFor(async () => expect(await count("WHERE word LIKE 'q%'")).toBe(250), { timeout: 15_000 });
    const distinct = await node.admin.sql(
      "SELECT count(DISTINCT word)::int AS n FROM words WHERE word LIKE 'q%'",
    );
    expect(distinct.rows[0]?.['n']).toBe(250);
    const info = (await node.admin.queues()).find((q) => q.name === 'queued');
    expect(info).toMatchObject({ depth: 0, inFlight: 0 });
    expect(info?.processed).toBeGreaterThanOrEqual(250);
  });

  it('ingests NDJSON over HTTP and answers with the count accepted', async () => {
    const before = await count();
    const response = await http('/v1/queues/words/records', {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' },
      body: 'h1\r\nh2\n\nh3\n',
    });
    expect(response.status).toBe(202);
    expect(await response.json()).toEqual({ accepted: 3 });
    expect(await count()).toBe(before + 3);
  });

  it('takes a raw body as one record, newlines included', async () => {
    const response = await http('/v1/queues/words/records', { method: 'POST', body: 'two\nlines' });
    expect(response.status).toBe(202);
    expect(await count("WHERE word = E'two\\nlines'")).toBe(1);
  });

  it('refuses an empty body, an unknown queue (listing the queues) and a body over the limit', async () => {
    const empty = await http('/v1/queues/words/records', { method: 'POST', body: '' });
    expect(empty.status).toBe(400);
    const unknown = await http('/v1/queues/nope/records', { method: 'POST', body: 'x' });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ queues: ['words', 'queued'] });
    const big = await http('/v1/queues/words/records', { method: 'POST', body: 'x'.repeat(5000) });
    expect(big.status).toBe(413);
  });

  it('refuses requests without the token or with a wrong one', async () => {
    expect((await http('/v1/queues', {}, null)).status).toBe(401);
    expect((await http('/v1/queues', {}, 'wrong-token-value')).status).toBe(401);
    expect((await http('/v1/queues')).status).toBe(200);
  });

  it('replays the error queue over HTTP and the record is processed again', async () => {
    const listing = (await (await http('/v1/queues/words/errors')).json()) as {
      errors: Array<{ id: string }>;
    };
    expect(listing.errors.length).toBeGreaterThan(0);
    const replay = await http('/v1/queues/words/errors/replay', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ids: [listing.errors[0]?.id] }),
    });
    expect(await replay.json()).toEqual({ replayed: 1 });
    // It fails again (it is still "fail") and comes back to the error queue after its attempts.
    await vi.waitFor(
      async () => expect((await node.admin.listErrors('words', { limit: 10 })).length).toBe(1),
      {
        timeout: 10_000,
      },
    );
  });

  it('throws UnknownQueueError from code for a queue that is not configured', async () => {
    await expect(node.publish('nope', [Buffer.from('x')])).rejects.toBeInstanceOf(UnknownQueueError);
  });

  it('lists per-queue figures over HTTP', async () => {
    const body = (await (await http('/v1/queues')).json()) as { queues: Array<Record<string, unknown>> };
    expect(body.queues.map((q) => q['name'])).toEqual(['words', 'queued']);
    for (const queue of body.queues) {
      expect(Object.keys(queue)).toEqual(
        expect.arrayContaining(['depth', 'in_flight', 'processed', 'failed', 'errors']),
      );
    }
  });
});
