// Malformed input over real HTTP, on the embedded store and on PostgreSQL: JSON bodies holding invalid
// UTF-8 are refused (400, naming the byte offset) and store nothing, while ingest keeps binary records as
// they are; every numeric parameter of a path, a query or a header refuses values out of its column's range
// or not written as digits with a 400 that names it, never a 500 carrying SQL text.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { buildHttpApp } from '../../src/http/server.js';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';

const handler = fileURLToPath(new URL('../node/handlers/words.ts', import.meta.url));
const BAD = ['99999999999999999999999', '-1', '1e3', 'abc', '0x10', ' 5', '9223372036854775808'];
/** What a 400 must never show: the text of a statement or of the database's refusal. */
const SQL_TEXT = /select|insert|delete|update|bigint|out of range|sqlstate|baton_/i;

interface ErrorReply {
  error: string;
  code: string;
}

/** `{"key":"k","value":"a<C3 28>b"}`: 0xC3 opens a two-byte sequence that 0x28 does not continue. */
function invalidUtf8Event(key: string): { body: Buffer; offset: number } {
  const head = Buffer.from(`{"key":"${key}","value":"a`);
  return {
    body: Buffer.concat([head, Buffer.from([0xc3, 0x28]), Buffer.from('b"}')]),
    offset: head.length + 0,
  };
}

describe.each(['embedded', 'postgres'] as const)('bad input on the %s store', (kind) => {
  let dir: string;
  let database: TestDatabase | undefined;
  let node: BatonNode;

  const send = (method: string, path: string, body?: Buffer | string, headers: Record<string, string> = {}) =>
    fetch(`${node.address}${path}`, {
      method,
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body }),
    });

  const errorRecords = async (): Promise<string[]> =>
    (await node.admin.sql('SELECT id::text AS id FROM baton_queue_errors ORDER BY id')).rows.map((row) =>
      String(row['id']),
    );

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'baton-bad-input-'));
    database = kind === 'postgres' ? await createTestDatabase() : undefined;
    node = await startNode(
      {
        node: { name: 'bad-input', data_dir: dir },
        http: { port: 0 },
        ...(database ? { store: { url: database.url, pool_size: 2 } } : {}),
        queues: { words: { handler } },
        tasks: { a: { command: 'sleep 30' } },
      },
      { log: createLogger({ level: 'silent' }) },
    );
  }, 120_000);

  afterAll(async () => {
    await node?.stop();
    await database?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  describe('a JSON body with invalid UTF-8', () => {
    it('refuses one event with 400 naming the byte offset, and stores nothing', async () => {
      const { body, offset } = invalidUtf8Event('bad-single');
      const response = await send('POST', '/v1/events', body);
      expect(response.status).toBe(400);
      const reply = (await response.json()) as ErrorReply;
      expect(reply.error).toContain(`invalid UTF-8 at byte offset ${offset}`);
      expect(reply.error).toContain('0xC3 0x28');
      expect(await node.events?.count({ keys: ['bad-single'] })).toEqual({ count: 0, capped: false });
    });

    it('refuses a batch (an array or {"events": [...]}) whole when one event holds it', async () => {
      const good = Buffer.from('{"key":"bad-batch","value":"fine"},');
      const { body } = invalidUtf8Event('bad-batch');
      for (const [open, close] of [
        ['[', ']'],
        ['{"events":[', ']}'],
      ] as const) {
        const batch = Buffer.concat([Buffer.from(open), good, body, Buffer.from(close)]);
        const response = await send('POST', '/v1/events', batch, {
          'content-type': 'application/json; charset=utf-8',
        });
        expect(response.status, open).toBe(400);
        expect(((await response.json()) as ErrorReply).error).toMatch(/invalid UTF-8 at byte offset \d+/);
      }
      expect(await node.events?.count({ keys: ['bad-batch'] })).toEqual({ count: 0, capped: false });
    });

    it('finds overlong, surrogate, truncated and stray bytes too; valid multi-byte text is stored as sent', async () => {
      for (const bytes of [
        [0xc0, 0xaf],
        [0xed, 0xa0, 0x80],
        [0xf4, 0x90, 0x80, 0x80],
        [0x80],
        [0xe2, 0x82],
      ]) {
        const body = Buffer.concat([
          Buffer.from('{"key":"odd","value":"'),
          Buffer.from(bytes),
          Buffer.from('"}'),
        ]);
        const response = await send('POST', '/v1/events', body);
        expect(response.status, bytes.join(' ')).toBe(400);
        expect(((await response.json()) as ErrorReply).error).toContain('invalid UTF-8 at byte offset 22');
      }
      expect(await node.events?.count({ keys: ['odd'] })).toEqual({ count: 0, capped: false });
      const text = 'héllo € 𝄞';
      const stored = await send(
        'POST',
        '/v1/events',
        Buffer.from(JSON.stringify({ key: 'fine', value: text })),
      );
      expect(stored.status).toBe(201);
      expect((await node.events?.list({ keys: ['fine'] }))?.[0]?.value).toBe(text);
    });

    it('refuses events whose text holds a lone surrogate escape, which UTF-8 cannot store either', async () => {
      const single = await send('POST', '/v1/events', '{"key":"lone","value":"a\\ud800b"}');
      expect(single.status).toBe(400);
      expect(((await single.json()) as ErrorReply).error).toContain('event.value: holds a lone surrogate');
      const batch = await send('POST', '/v1/events', '[{"key":"lone"},{"key":"lone","sender":"\\udc00"}]');
      expect(batch.status).toBe(400);
      expect(((await batch.json()) as ErrorReply).error).toContain(
        'events[1].sender: holds a lone surrogate',
      );
      expect(await node.events?.count({ keys: ['lone'] })).toEqual({ count: 0, capped: false });
      const paired = await send('POST', '/v1/events', '{"key":"lone","value":"\\ud834\\udd1e"}');
      expect(paired.status).toBe(201);
      expect((await node.events?.list({ keys: ['lone'] }))?.[0]?.value).toBe('𝄞');
    });

    it('is refused on every JSON route (error-queue replay), not only on events', async () => {
      const before = await errorRecords();
      const body = Buffer.concat([Buffer.from('{"ids":["1'), Buffer.from([0xff]), Buffer.from('"]}')]);
      const response = await send('POST', '/v1/queues/words/errors/replay', body);
      expect(response.status).toBe(400);
      expect(((await response.json()) as ErrorReply).error).toContain('invalid UTF-8 at byte offset 10');
      expect(await errorRecords()).toEqual(before);
    });

    it('does not touch ingest: records are bytes, stored as sent', async () => {
      const record = Buffer.from([0x62, 0xc3, 0x28, 0xff]);
      const response = await send('POST', '/v1/queues/words/records', record, {
        'content-type': 'application/octet-stream',
      });
      expect(response.status).toBe(202);
      // The handler decodes it on its own (into "b\uFFFD(\uFFFD"), maybe after the answer on a queue path.
      await vi.waitFor(
        async () => {
          const rows = await node.admin.sql("SELECT count(*)::int AS n FROM words WHERE word LIKE 'b%'");
          expect(rows.rows[0]?.['n']).toBe(1);
        },
        { timeout: 30_000, interval: 200 },
      );
    });
  });

  describe('numeric parameters', () => {
    /** Each request with a numeric parameter, and the parameter's name the 400 must give. */
    const numeric: Array<{
      name: string;
      request: (value: string) => [string, string, Buffer?];
      field: string;
    }> = [
      {
        name: 'DELETE error record',
        request: (v) => ['DELETE', `/v1/queues/words/errors/${encodeURIComponent(v)}`],
        field: 'path.id',
      },
      {
        name: 'list errors after',
        request: (v) => ['GET', `/v1/queues/words/errors?after=${encodeURIComponent(v)}`],
        field: 'query.after',
      },
      {
        name: 'list errors limit',
        request: (v) => ['GET', `/v1/queues/words/errors?limit=${encodeURIComponent(v)}`],
        field: 'query.limit',
      },
      {
        name: 'replay ids',
        request: (v) => ['POST', '/v1/queues/words/errors/replay', Buffer.from(JSON.stringify({ ids: [v] }))],
        field: 'body.ids.0',
      },
      {
        name: 'events from',
        request: (v) => ['GET', `/v1/events?from=${encodeURIComponent(v)}`],
        field: 'query.from',
      },
      {
        name: 'events to',
        request: (v) => ['GET', `/v1/events?to=${encodeURIComponent(v)}`],
        field: 'query.to',
      },
      {
        name: 'events limit',
        request: (v) => ['GET', `/v1/events?limit=${encodeURIComponent(v)}`],
        field: 'query.limit',
      },
      {
        name: 'count from',
        request: (v) => ['GET', `/v1/events/count?from=${encodeURIComponent(v)}`],
        field: 'query.from',
      },
      {
        name: 'stream from',
        request: (v) => ['GET', `/v1/events/stream?from=${encodeURIComponent(v)}`],
        field: 'query.from',
      },
      {
        name: 'offset-at time',
        request: (v) => ['GET', `/v1/events/offset-at?time=${encodeURIComponent(v)}`],
        field: 'time',
      },
      {
        name: 'tasks limit',
        request: (v) => ['GET', `/v1/tasks?limit=${encodeURIComponent(v)}`],
        field: 'query.limit',
      },
    ];

    it.each(numeric)(
      '$name: refuses bad values with a 400 naming the parameter',
      async ({ request, field }) => {
        for (const value of BAD) {
          const [method, path, body] = request(value);
          const response = await send(method, path, body);
          const text = await response.text();
          expect(response.status, `${method} ${path}: ${text}`).toBe(400);
          const reply = JSON.parse(text) as ErrorReply;
          expect(reply.error, path).toContain(field);
          expect(reply.error, path).toMatch(/expected/);
          expect(reply.error, path).not.toMatch(SQL_TEXT);
        }
      },
    );

    it('refuses a bad Last-Event-ID, and a JSON offset out of range, with a 400', async () => {
      // HTTP trims header values: " 5" arrives as "5", which is a good one.
      for (const value of BAD.filter((text) => text !== ' 5')) {
        const response = await send('GET', '/v1/events/stream', undefined, { 'last-event-id': value });
        expect(response.status, value).toBe(400);
        expect(((await response.json()) as ErrorReply).error).toContain('Last-Event-ID');
      }
      for (const value of ['99999999999999999999999', '-1', '"abc"', '1.5']) {
        const response = await send('PUT', '/v1/events/listeners/x', Buffer.from(`{"offset":${value}}`));
        expect(response.status, value).toBe(400);
        expect(((await response.json()) as ErrorReply).error).toContain('body.offset');
      }
    });

    it('keeps error records through bad deletes and drops one by a good id', async () => {
      await node.admin.sql(
        "INSERT INTO baton_queue_errors (queue, payload, attempts, error, enqueued_at) VALUES ('words', '\\x00', 1, 'x', now())",
      );
      const ids = await errorRecords();
      expect(ids.length).toBeGreaterThan(0);
      for (const value of BAD) await send('DELETE', `/v1/queues/words/errors/${encodeURIComponent(value)}`);
      expect(await errorRecords()).toEqual(ids);
      const last = ids[ids.length - 1] ?? '';
      expect((await send('DELETE', `/v1/queues/words/errors/9223372036854775807`)).status).toBe(404);
      expect((await send('DELETE', `/v1/queues/words/errors/00${last}`)).status).toBe(200);
      expect(await errorRecords()).toEqual(ids.slice(0, -1));
      const listed = await send('GET', '/v1/queues/words/errors?after=9223372036854775807&limit=10000');
      expect(listed.status).toBe(200);
    });

    it('answers an unknown task run id of any shape with 404', async () => {
      for (const value of BAD) {
        const response = await send('POST', `/v1/tasks/runs/${encodeURIComponent(value)}/stop`);
        expect(response.status, value).toBe(404);
      }
    });
  });

  it('answers a failure that is not a Baton error with 500 naming the log line, not quoting the statement', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'error' }, { write: (line: string) => void lines.push(line) });
    const app = buildHttpApp(node, node.config.http, log);
    app.get('/boom', () => {
      throw new Error('Failed query: DELETE FROM baton_queue_errors WHERE id = $1 (value out of range)');
    });
    try {
      const response = await app.inject({ method: 'GET', url: '/boom' });
      expect(response.statusCode).toBe(500);
      const reply = response.json<ErrorReply>();
      expect(reply.code).toBe('INTERNAL');
      expect(reply.error).not.toMatch(SQL_TEXT);
      const reqId = /reqId ([\w-]+)/.exec(reply.error)?.[1];
      expect(reqId).toBeDefined();
      const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
      const line = logged.find((entry) => entry['reqId'] === reqId);
      expect(String(line?.['err'])).toContain('DELETE FROM baton_queue_errors');
    } finally {
      await app.close();
    }
  });
});
