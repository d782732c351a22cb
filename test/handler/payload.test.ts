// Payload schemas in a handler module: the loader's check of the `payload` export, the reasons a record is
// refused for (not UTF-8, not JSON, the schema's issues, kept short), and the processor, which never gives
// the handler a record that does not parse and fails such a record for good without failing its neighbours.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';

import { resolveConfig } from '../../src/config/load.js';
import { BatchFailedError, ConfigError, InvalidPayloadError } from '../../src/errors.js';
import { loadHandler } from '../../src/handler/load.js';
import { payloadParser } from '../../src/handler/payload.js';
import { createLogger } from '../../src/log.js';
import { RecordProcessor } from '../../src/queue/processor.js';
import type { TempStore } from '../support/pglite.js';
import { openTempStore } from '../support/pglite.js';

/** Packages as a module in a temp folder imports them: by their file, there being no node_modules around it. */
const ZOD = new URL('../../node_modules/zod/index.js', import.meta.url).href;
const DRIZZLE = new URL('../../node_modules/drizzle-orm/index.js', import.meta.url).href;

let dir: string;
let temp: TempStore;
let serial = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-payload-'));
  temp = await openTempStore();
  await temp.store.execute(sql`CREATE TABLE seen (name text, n int, payload text, record text)`);
  await temp.store.execute(
    sql`CREATE TABLE ping (id serial PRIMARY KEY, name text NOT NULL, timestamp timestamptz NOT NULL)`,
  );
});
afterAll(async () => {
  await temp?.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** Writes `source` as a handler module of its own and loads it for queue "q". */
async function load(source: string) {
  const path = join(dir, `handler-${++serial}.mjs`);
  await writeFile(path, source);
  return { path, handler: await loadHandler('q', path, '/etc/baton.toml') };
}

const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

describe('loading a handler with a payload schema', () => {
  it('refuses a payload export without safeParse(), naming the key and the module', async () => {
    const error = await load(
      `export const payload = { parse: (v) => v };\nexport function process() {}\n`,
    ).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).key).toBe('queues.q.handler');
    expect((error as Error).message).toMatch(
      /handler-\d+\.mjs: payload must be a schema with a safeParse\(\)/,
    );
    await expect(load(`export const payload = 'a string';\nexport function process() {}\n`)).rejects.toThrow(
      ConfigError,
    );
  });

  it('takes a zod schema, and any object with safeParse() (a module built against another zod)', async () => {
    const zod = await load(
      `import { z } from ${JSON.stringify(ZOD)};\n` +
        `export const payload = z.object({ name: z.string() });\nexport function process() {}\n`,
    );
    expect(zod.handler.payload?.(json({ name: 'ada' }))).toEqual({ ok: true, value: { name: 'ada' } });
    const own = await load(
      `export const payload = { safeParse: (v) => v === 1 ? { success: true, data: 'one' } : ` +
        `{ success: false, error: { issues: [{ path: [], message: 'not one' }] } } };\n` +
        `export function process() {}\n`,
    );
    expect(own.handler.payload?.(json(1))).toEqual({ ok: true, value: 'one' });
    expect(own.handler.payload?.(json(2))).toEqual({
      ok: false,
      reason: "payload does not match the queue's schema: not one",
    });
  });

  it('has no parser for a module without payload', async () => {
    const { handler } = await load(`export function process() {}\n`);
    expect(handler.payload).toBeUndefined();
  });
});

describe('the reasons a record does not parse', () => {
  const parse = payloadParser(
    z.object({ name: z.string(), items: z.array(z.object({ n: z.number().int() })) }),
  );
  const reason = (record: Buffer): string => {
    const result = parse(record);
    if (result.ok) throw new Error('expected a refusal');
    return result.reason;
  };

  it('says when a record is not UTF-8, or not JSON', () => {
    expect(reason(Buffer.from([0x7b, 0xff, 0x7d]))).toMatch(/^payload is not valid UTF-8/);
    expect(reason(Buffer.from('{"name": '))).toMatch(/^payload is not JSON: /);
    expect(reason(Buffer.from('not json\u0000at all'))).not.toContain('\u0000');
  });

  it("names the issues' paths and messages, at most three, and counts the others", () => {
    expect(reason(json({ name: 1, items: [] }))).toBe(
      "payload does not match the queue's schema: name: Invalid input: expected string, received number",
    );
    expect(reason(json({ name: 'a', items: [{ n: 1 }, { n: 1.5 }] }))).toMatch(
      /schema: items\[1\]\.n: Invalid input: expected int, received number$/,
    );
    const many = reason(json({ items: [{ n: 'a' }, { n: 'b' }, { n: 'c' }, { n: 'd' }] }));
    expect(many).toMatch(
      /^payload does not match the queue's schema: name: .*; items\[0\]\.n: .*; items\[1\]\.n: /,
    );
    expect(many).toMatch(/ \(and 2 more\)$/);
    expect(reason(json([1]))).toBe(
      "payload does not match the queue's schema: Invalid input: expected object, received array",
    );
  });

  it('cuts a long message, and refuses with what a schema threw', () => {
    const long = payloadParser(z.string().refine(() => false, { error: 'x'.repeat(500) }));
    const result = long(json('a'));
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.reason.length).toBeLessThan(200);
    const throwing = payloadParser({
      safeParse: () => {
        throw new Error('Encountered Promise during synchronous parse');
      },
    });
    expect(throwing(json(1))).toEqual({
      ok: false,
      reason: "the queue's payload schema failed: Encountered Promise during synchronous parse",
    });
  });
});

describe('the processor of a queue with a payload schema', () => {
  /** A processor whose handler stores each record's parsed payload as given to it. */
  async function processor(exports: 'process' | 'processBatch') {
    const body =
      exports === 'process'
        ? `export async function process(tx, record, ctx) {
             await tx.execute(sql\`INSERT INTO seen (name, n, payload, record)
               VALUES (\${ctx.payload.name}, \${ctx.payload.n}, \${JSON.stringify(ctx.payload)}, \${ctx.log.bindings().record ?? null})\`);
           }`
        : `export async function processBatch(tx, records, ctx) {
             if (ctx.payloads.length !== records.length) throw new Error('payloads do not match records');
             for (const value of ctx.payloads)
               await tx.execute(sql\`INSERT INTO seen (name, n, payload) VALUES (\${value.name}, \${value.n}, 'batch')\`);
           }`;
    const { path, handler } = await load(
      `import { z } from ${JSON.stringify(ZOD)};\n` +
        `import { sql } from ${JSON.stringify(DRIZZLE)};\n` +
        `export const payload = z.object({ name: z.string(), n: z.coerce.number() });\n${body}\n`,
    );
    const queue = resolveConfig({ queues: { q: { handler: path } } }, { baseDir: dir, env: {} }).queues['q']!;
    return new RecordProcessor({
      queue,
      handler,
      log: createLogger({ level: 'silent' }),
      abort: new AbortController().signal,
    });
  }

  beforeEach(async () => {
    await temp.store.execute(sql`DELETE FROM seen`);
  });

  async function seen(): Promise<Array<Record<string, unknown>>> {
    const rows = await temp.store.execute(sql`SELECT name, n, payload, record FROM seen ORDER BY name`);
    return rows.map((row) => ({ ...row }));
  }

  const records = [
    json({ name: 'a', n: '1' }),
    Buffer.from('{oops'),
    json({ name: 'c', n: 3 }),
    json({ name: 4 }),
    json({ name: 'e', n: 5 }),
  ];
  const claim = { batch: 'b1', ids: ['r1', 'r2', 'r3', 'r4', 'r5'] };

  it('fails the records that do not parse for good, never gives them to process(), and runs the others', async () => {
    const processing = await processor('process');
    const outcome = await temp.store.transaction((tx) => processing.run(tx, records, { claim }));
    expect(outcome.succeeded).toEqual([0, 2, 4]);
    expect(outcome.failed).toEqual([
      { index: 1, error: expect.stringMatching(/^payload is not JSON: /) as string, permanent: true },
      {
        index: 3,
        error:
          "payload does not match the queue's schema: name: Invalid input: expected string, received number; " +
          'n: Invalid input: expected number, received NaN',
        permanent: true,
      },
    ]);
    // Each run got its own record's payload (coerced by the schema), and its log names the record.
    expect(await seen()).toEqual([
      { name: 'a', n: 1, payload: '{"name":"a","n":1}', record: 'r1' },
      { name: 'c', n: 3, payload: '{"name":"c","n":3}', record: 'r3' },
      { name: 'e', n: 5, payload: '{"name":"e","n":5}', record: 'r5' },
    ]);
  });

  it('gives processBatch() ctx.payloads, in the order of the records', async () => {
    const processing = await processor('processBatch');
    const good = [records[0]!, records[2]!, records[4]!];
    await temp.store.transaction((tx) => processing.runWhole(tx, good, claim));
    expect((await seen()).map((row) => [row['name'], row['n']])).toEqual([
      ['a', 1],
      ['c', 3],
      ['e', 5],
    ]);
  });

  it('runWhole() fails the batch before the handler runs when a record does not parse', async () => {
    const processing = await processor('processBatch');
    await expect(temp.store.transaction((tx) => processing.runWhole(tx, records, claim))).rejects.toThrow(
      BatchFailedError,
    );
    expect(await seen()).toEqual([]);
    const outcome = await temp.store.transaction((tx) => processing.run(tx, records, { claim }));
    expect(outcome.succeeded).toEqual([0, 2, 4]);
    expect(outcome.failed.map(({ index, permanent }) => [index, permanent])).toEqual([
      [1, true],
      [3, true],
    ]);
    expect(await seen()).toHaveLength(3);
  });

  it('counts refused records against the failure budget of runBounded()', async () => {
    const processing = await processor('processBatch');
    const outcome = await temp.store.transaction((tx) =>
      processing.runBounded(tx, records, { claim, maxFailures: 1 }),
    );
    expect(outcome).toBeUndefined();
  });

  it('checkPayloads() names the first record that does not parse, by its position', async () => {
    const processing = await processor('process');
    const error = (() => {
      try {
        processing.checkPayloads(records);
      } catch (caught) {
        return caught;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(InvalidPayloadError);
    expect((error as Error).message).toMatch(/^record 2 of 5: payload is not JSON: /);
    expect(() => processing.checkPayloads([records[0]!, records[2]!])).not.toThrow();
  });
});

describe('the quickstart handler with a payload schema (examples/quickstart/handlers/ping-typed.ts)', () => {
  it('stores a ping from its parsed payload, and refuses one without a timestamp', async () => {
    const path = new URL('../../examples/quickstart/handlers/ping-typed.ts', import.meta.url).pathname;
    const handler = await loadHandler('ping', path);
    const queue = resolveConfig({ queues: { ping: { handler: path } } }, { baseDir: dir, env: {} }).queues[
      'ping'
    ]!;
    const processor = new RecordProcessor({
      queue,
      handler,
      log: createLogger({ level: 'silent' }),
      abort: new AbortController().signal,
    });
    const good = json({ name: 'typed', timestamp: '2026-11-22T10:00:00Z' });
    const bad = json({ name: 'untimed' });
    expect(() => processor.checkPayloads([good, bad])).toThrow(
      /^record 2 of 2: payload does not match the queue's schema: timestamp: /,
    );
    const outcome = await temp.store.transaction((tx) => processor.run(tx, [good, bad]));
    expect(outcome.succeeded).toEqual([0]);
    expect(outcome.failed).toMatchObject([{ index: 1, permanent: true }]);
    const rows = await temp.store.execute(sql`SELECT name, timestamp::text AS at FROM ping`);
    expect(rows.map((row) => ({ ...row }))).toEqual([{ name: 'typed', at: '2026-11-22 10:00:00+00' }]);
  });
});
