// Property-based fuzzing of the ingest endpoint with the quickstart handler: random bodies (valid pings,
// near-JSON, arbitrary bytes, broken NDJSON lines), content types and headers. The node must answer every
// request with 202 or a 4xx carrying a message, never crash or answer 5xx, and in the end every accepted
// record is either stored once or waiting in the error queue: nothing half-done, nothing lost.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';

const handler = fileURLToPath(new URL('../../examples/quickstart/handlers/ping.ts', import.meta.url));
const BODY_LIMIT = 8192;
let dir: string;
let node: BatonNode;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-fuzz-ingest-'));
  node = await startNode(
    {
      node: { name: 'fuzz-ingest', data_dir: dir },
      http: { port: 0, body_limit_bytes: BODY_LIMIT },
      queues: {
        ping: { handler, max_attempts: 1, retry_delay_ms: 1, retry_max_delay_ms: 1, batch_size: 50 },
      },
    },
    { log: createLogger({ level: 'silent' }) },
  );
});

afterAll(async () => {
  await node.stop();
  await rm(dir, { recursive: true, force: true });
});

const goodPing = fc
  .record({
    name: fc.string({ minLength: 1, maxLength: 20 }),
    at: fc.integer({ min: 0, max: 4_000_000_000_000 }),
  })
  .map(({ name, at }) => JSON.stringify({ name, timestamp: new Date(at).toISOString() }));
const nearPing = fc.oneof(
  fc.json(),
  fc
    .record({
      name: fc.anything(),
      timestamp: fc.oneof(fc.string(), fc.integer(), fc.date({ noInvalidDate: true }).map(String)),
    })
    .map((value) => JSON.stringify(value)),
  goodPing.map((text) => text.slice(0, Math.max(1, text.length - 3))),
  fc.string({ unit: 'binary', maxLength: 60 }),
);
const line = fc.oneof(
  { weight: 3, arbitrary: goodPing.map((text) => Buffer.from(text)) },
  { weight: 3, arbitrary: nearPing.map((text) => Buffer.from(text)) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 80 }).map((bytes) => Buffer.from(bytes)) },
);
const contentType = fc.oneof(
  fc.constant('application/x-ndjson'),
  fc.constant('application/x-ndjson; charset=utf-8'),
  fc.constant('APPLICATION/X-NDJSON'),
  fc.constant('application/json'),
  fc.constant('application/octet-stream'),
  fc.constant('text/plain'),
  fc.constant(undefined),
  fc.string({ unit: 'grapheme-ascii', maxLength: 40 }),
);
const request = fc.record({
  lines: fc.array(line, { maxLength: 40 }),
  separator: fc.constantFrom('\n', '\r\n', '\n\n'),
  trailing: fc.boolean(),
  contentType,
  queue: fc.oneof(
    { weight: 9, arbitrary: fc.constant('ping') },
    { weight: 1, arbitrary: fc.string({ maxLength: 10 }) },
  ),
  padding: fc.oneof(
    { weight: 9, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.integer({ min: BODY_LIMIT, max: 2 * BODY_LIMIT }) },
  ),
});

function bodyOf(input: { lines: Buffer[]; separator: string; trailing: boolean; padding: number }): Buffer {
  const separator = Buffer.from(input.separator);
  const parts: Buffer[] = [];
  for (const [index, part] of input.lines.entries()) {
    if (index > 0) parts.push(separator);
    parts.push(part);
  }
  if (input.trailing) parts.push(separator);
  if (input.padding > 0) parts.push(Buffer.alloc(input.padding, 0x61));
  return Buffer.concat(parts);
}

describe('fuzzing POST /v1/queues/:queue/records', () => {
  it('answers 202 or a clear 4xx, and stores every accepted record once or keeps it in the error queue', async () => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(request, async (input) => {
        const body = bodyOf(input);
        const headers: Record<string, string> = {};
        if (input.contentType !== undefined && /^[\t\x20-\x7e]*$/.test(input.contentType)) {
          headers['content-type'] = input.contentType;
        }
        const response = await fetch(`${node.address}/v1/queues/${encodeURIComponent(input.queue)}/records`, {
          method: 'POST',
          headers,
          body,
        });
        const answer = (await response.json()) as { accepted?: number; error?: string };
        expect(response.status, JSON.stringify(answer)).toBeLessThan(500);
        if (response.status === 202) {
          expect(answer.accepted).toBeGreaterThan(0);
          accepted += answer.accepted ?? 0;
        } else {
          expect([400, 404, 413, 415]).toContain(response.status);
          expect(answer.error).toEqual(expect.any(String));
          expect(answer.error?.length).toBeGreaterThan(0);
        }
      }),
      { numRuns: Number(process.env['FUZZ_RUNS'] ?? 150) },
    );
    expect(accepted).toBeGreaterThan(0);

    // Everything accepted ends up stored or in errors-ping: nothing lost, nothing twice.
    await expect
      .poll(
        async () => {
          const queue = (await node.admin.queues()).find((candidate) => candidate.name === 'ping');
          return (queue?.depth ?? -1) + (queue?.inFlight ?? -1);
        },
        { timeout: 60_000, interval: 200 },
      )
      .toBe(0);
    const stored = Number((await node.admin.sql('SELECT count(*)::int AS n FROM ping')).rows[0]?.['n']);
    const errors = (await node.admin.queues()).find((candidate) => candidate.name === 'ping')?.errors ?? 0;
    expect(stored + errors).toBe(accepted);
    expect(await node.ready()).toBe(true);
  });
});
