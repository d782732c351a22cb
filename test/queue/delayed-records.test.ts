// Delayed records on a running node: published in code, over HTTP (a header for the request, an envelope per
// NDJSON line) and with the admin client, to a store queue (embedded store, inline ingest on) and a Redis
// queue. Each runs once, never before its time, and waits counted as `delayed` on /v1/queues and /metrics.
// Bad delays are answered 400 naming the problem, and store nothing.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { BadRequestError, HttpAdmin, startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import type { TestRedis } from '../support/redis.js';
import { openTestRedis } from '../support/redis.js';

const handler = fileURLToPath(new URL('../fixtures/delayed-handler.ts', import.meta.url));
const TOKEN = 'delayed-token-0123456789';
let dir: string;
let node: BatonNode;
let redis: TestRedis;
let redisKey: string;
/** Distinguishes this file's records from one test to the next. */
let serial = 0;

interface Run {
  readonly ranMs: number;
  /** The database's clock when the handler ran (ms). */
  readonly ranAtMs: number;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-delayed-'));
  redis = await openTestRedis();
  redisKey = redis.queue();
  node = await startNode(
    {
      node: { name: 'delayed-node', data_dir: dir },
      http: { port: 0, token: TOKEN },
      redis: { url: redis.url },
      queues: {
        s: { handler },
        r: { handler, backend: 'redis', key: redisKey },
      },
    },
    { log: createLogger({ level: 'silent' }) },
  );
}, 60_000);

afterAll(async () => {
  await node?.stop();
  await redis?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

const unique = (label: string): Buffer => Buffer.from(`${label}-${++serial}-${Date.now()}`);

/** The runs of `record`, oldest first. */
async function runsOf(record: Buffer): Promise<Run[]> {
  const result = await node.admin.sql(
    `SELECT ran_ms::text AS ran_ms, (extract(epoch FROM ran_at) * 1000)::float8 AS ran_at_ms
     FROM delayed_runs WHERE payload = $1 ORDER BY id`,
    [record.toString('hex')],
  );
  return result.rows.map((row) => ({ ranMs: Number(row['ran_ms']), ranAtMs: Number(row['ran_at_ms']) }));
}

/** Waits until `record` ran (generous limit), then a little longer to see that it ran once only. */
async function waitForRun(record: Buffer): Promise<Run> {
  await expect.poll(async () => (await runsOf(record)).length, { timeout: 30_000, interval: 100 }).toBe(1);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const runs = await runsOf(record);
  expect(runs).toHaveLength(1);
  return runs[0] as Run;
}

/**
 * A run is never before its time, by the clock that decides: the database's for a store queue, the node's
 * for a Redis queue (one host here, so both are held to the same bound).
 */
function expectNotBefore(run: Run, notBeforeMs: number): void {
  expect(run.ranAtMs).toBeGreaterThanOrEqual(notBeforeMs);
  expect(run.ranMs).toBeGreaterThanOrEqual(notBeforeMs);
}

async function delayedFigure(queue: string): Promise<{ delayed: unknown; depth: unknown }> {
  const response = await fetch(`${node.address}/v1/queues`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  const body = (await response.json()) as { queues: Array<Record<string, unknown>> };
  const found = body.queues.find((entry) => entry['name'] === queue);
  return { delayed: found?.['delayed'], depth: found?.['depth'] };
}

async function metric(name: string, queue: string): Promise<number | undefined> {
  const response = await fetch(`${node.address}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
  const line = (await response.text())
    .split('\n')
    .find((text) => text.startsWith(`${name}{queue="${queue}"`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

function post(queue: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${node.address}/v1/queues/${queue}/records`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/x-ndjson', ...headers },
    body,
  });
}

describe.each(['s', 'r'])('delayed records on queue %s (s: store, r: Redis)', (queue) => {
  it('node.publish with delayMs and runAt: each runs once, not before its time, and counts as delayed meanwhile', async () => {
    const byDelay = unique('delay');
    const byTime = unique('at');
    const published = Date.now();
    const runAt = new Date(published + 2_500);
    expect(await node.publish(queue, [byDelay], { delayMs: 2_000 })).toBe(1);
    expect(await node.publish(queue, [byTime], { runAt })).toBe(1);
    // Both wait: on /v1/queues and /metrics (its figures are kept for a second).
    const waiting = await delayedFigure(queue);
    expect(waiting.delayed).toBeGreaterThanOrEqual(2);
    expect(waiting.depth).toBeGreaterThanOrEqual(2);
    await expect
      .poll(() => metric('baton_queue_delayed', queue), { timeout: 10_000, interval: 200 })
      .toBeGreaterThanOrEqual(2);
    expectNotBefore(await waitForRun(byDelay), published + 2_000);
    expectNotBefore(await waitForRun(byTime), runAt.getTime());
    await expect.poll(async () => (await delayedFigure(queue)).delayed, { timeout: 10_000 }).toBe(0);
    await expect.poll(() => metric('baton_queue_delayed', queue), { timeout: 10_000, interval: 200 }).toBe(0);
  });

  it('Baton-Delay and Baton-Run-At delay every record of a request', async () => {
    const [one, two, three] = [unique('h1'), unique('h2'), unique('h3')];
    const sent = Date.now();
    const delayed = await post(queue, Buffer.concat([one, Buffer.from('\n'), two, Buffer.from('\n')]), {
      'baton-delay': '1.5s',
    });
    expect(delayed.status).toBe(202);
    expect(await delayed.json()).toEqual({ accepted: 2 });
    const at = new Date(sent + 2_000);
    const timed = await post(queue, three, {
      'content-type': 'application/octet-stream',
      'baton-run-at': at.toISOString(),
    });
    expect(timed.status).toBe(202);
    expectNotBefore(await waitForRun(one), sent + 1_500);
    expectNotBefore(await waitForRun(two), sent + 1_500);
    expectNotBefore(await waitForRun(three), at.getTime());
  });

  it('envelopes give each NDJSON line its own delay, and keep records byte for byte', async () => {
    const binary = Buffer.concat([unique('bin'), Buffer.from([0, 0xff, 0x0a, 0x80])]);
    const now = unique('now');
    const later = unique('later');
    const atTime = unique('at-time');
    const sent = Date.now();
    const at = new Date(sent + 1_800);
    const lines = [
      { record_base64: binary.toString('base64'), delay_ms: 1_200 },
      { record: now.toString() },
      { record: later.toString(), delay_ms: 1_000 },
      { record: atTime.toString(), run_at: at.toISOString() },
    ];
    const response = await post(queue, lines.map((line) => JSON.stringify(line)).join('\n'), {
      'baton-envelope': 'json',
    });
    expect(response.status).toBe(202);
    expect(await response.json()).toEqual({ accepted: 4 });
    expect((await waitForRun(now)).ranMs).toBeGreaterThanOrEqual(sent);
    expectNotBefore(await waitForRun(binary), sent + 1_200);
    expectNotBefore(await waitForRun(later), sent + 1_000);
    expectNotBefore(await waitForRun(atTime), at.getTime());
  });

  it('a time already past and a zero delay run at once', async () => {
    const past = unique('past');
    const zero = unique('zero');
    await node.publish(queue, [past], { runAt: new Date(Date.now() - 60_000) });
    const response = await post(queue, zero, { 'content-type': 'text/plain', 'baton-delay': '0s' });
    expect(response.status).toBe(202);
    await waitForRun(past);
    await waitForRun(zero);
  });
});

describe('bad delays', () => {
  const cases: Array<[string, Record<string, string>, string, RegExp]> = [
    ['both headers', { 'baton-delay': '1s', 'baton-run-at': '2030-01-01T00:00:00Z' }, 'x', /not both/],
    ['a duration without sense', { 'baton-delay': '5 parsecs' }, 'x', /Baton-Delay: expected a duration/],
    ['a negative duration', { 'baton-delay': '-5s' }, 'x', /Baton-Delay: expected a duration/],
    ['a time without an offset', { 'baton-run-at': '2030-01-01T00:00:00' }, 'x', /Baton-Run-At: expected/],
    ['a time that is no date', { 'baton-run-at': 'tomorrow' }, 'x', /Baton-Run-At: expected/],
    ['a delay past a year', { 'baton-delay': '400d' }, 'x', /at most 365 days/],
    ['a time past a year', { 'baton-run-at': '2999-01-01T00:00:00Z' }, 'x', /at most 365 days/],
    ['an unknown envelope form', { 'baton-envelope': 'xml' }, '{"record":"x"}', /only form is "json"/],
    [
      'an envelope outside NDJSON',
      { 'baton-envelope': 'json', 'content-type': 'application/octet-stream' },
      '{"record":"x"}',
      /needs Content-Type: application\/x-ndjson/,
    ],
    [
      'a line that is no JSON',
      { 'baton-envelope': 'json' },
      '{"record":"x"}\nnot json',
      /line 2: not a JSON/,
    ],
    [
      'a line with both delays',
      { 'baton-envelope': 'json' },
      '{"record":"x","delay_ms":5,"run_at":"2030-01-01T00:00:00Z"}',
      /line 1: delay_ms or line 1: run_at, not both/,
    ],
    ['a line without its record', { 'baton-envelope': 'json' }, '{"delay_ms":5}', /line 1/],
    ['a line with an unknown field', { 'baton-envelope': 'json' }, '{"record":"x","delay":5}', /line 1/],
    [
      'a line with a negative delay',
      { 'baton-envelope': 'json' },
      '{"record":"x","delay_ms":-1}',
      /line 1: delay_ms/,
    ],
  ];

  it.each(cases)('%s: 400 naming the problem, nothing stored', async (_, headers, body, message) => {
    const before = (await node.admin.queues()).find((queue) => queue.name === 's')?.depth;
    const response = await post('s', body, headers);
    expect(response.status).toBe(400);
    const answer = (await response.json()) as { code: string; error: string };
    expect(answer.code).toBe('BAD_REQUEST');
    expect(answer.error).toMatch(message);
    expect((await node.admin.queues()).find((queue) => queue.name === 's')?.depth).toBe(before);
  });

  it('node.publish and the HTTP admin refuse the same, with BadRequestError', async () => {
    await expect(
      node.publish('s', [Buffer.from('x')], { delayMs: 1, runAt: new Date(Date.now() + 1000) }),
    ).rejects.toBeInstanceOf(BadRequestError);
    await expect(node.publish('s', [Buffer.from('x')], { delayMs: -1 })).rejects.toThrow(/delayMs/);
    const admin = new HttpAdmin(node.address ?? '', { token: TOKEN });
    await expect(
      admin.publish('s', [Buffer.from('x')], { runAt: new Date(Date.now() + 400 * 86_400_000) }),
    ).rejects.toBeInstanceOf(BadRequestError);
  });

  it('the HTTP admin sends a delay in its header', async () => {
    const admin = new HttpAdmin(node.address ?? '', { token: TOKEN });
    const records = [unique('admin-1'), unique('admin-2')];
    const sent = Date.now();
    expect(await admin.publish('r', records, { delayMs: 1_000 })).toBe(2);
    for (const record of records) expectNotBefore(await waitForRun(record), sent + 1_000);
  });
});
