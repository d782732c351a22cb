// GET /metrics on a running node: the Prometheus text carries the queue counters and gauges, role, term,
// events and process metrics, behind the token; and a dashboard session cookie is issued only for a token.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';

const handler = fileURLToPath(new URL('../fixtures/gate-handler.ts', import.meta.url));
const TOKEN = 'metrics-token-0123456789';
let dir: string;
let node: BatonNode;

const get = (path: string, headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }) =>
  fetch(`${node.address}${path}`, { headers });

/** The value of one sample line, e.g. sample(text, 'baton_queue_depth{queue="gate"'). */
function sample(text: string, prefix: string): number | undefined {
  const line = text.split('\n').find((candidate) => candidate.startsWith(prefix));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-metrics-'));
  node = await startNode(
    {
      node: { name: 'metrics-node', data_dir: dir },
      http: { port: 0, token: TOKEN },
      queues: { gate: { handler, max_attempts: 1, retry_delay_ms: 10, retry_max_delay_ms: 10 } },
    },
    { log: createLogger({ level: 'silent' }) },
  );
});

afterAll(async () => {
  await node.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('/metrics', () => {
  it('is refused without the token', async () => {
    expect((await get('/metrics', {})).status).toBe(401);
    expect((await get('/metrics', { authorization: 'Bearer wrong-token-000' })).status).toBe(401);
  });

  it('counts processed and failed records, errors waiting, batches, role and events', async () => {
    await node.admin.sql(`INSERT INTO gate_refused (word) VALUES ('nope')`);
    await node.publish(
      'gate',
      ['one', 'two', 'nope', 'three'].map((word) => Buffer.from(word)),
    );
    await node.events?.append([{ key: 'metrics.test' }, { key: 'metrics.test' }]);
    await expect.poll(async () => (await node.admin.queues())[0]?.errors, { timeout: 10_000 }).toBe(1);

    const response = await get('/metrics');
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const text = await response.text();
    expect(sample(text, 'baton_records_processed_total{queue="gate"')).toBe(3);
    expect(sample(text, 'baton_records_failed_total{queue="gate"')).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'baton_errors_waiting{queue="gate"')).toBe(1);
    expect(sample(text, 'baton_queue_depth{queue="gate"')).toBe(0);
    expect(sample(text, 'baton_role{role="not-in-group"')).toBe(1);
    expect(sample(text, 'baton_role{role="primary"')).toBe(0);
    expect(sample(text, 'baton_term{')).toBe(0);
    expect(sample(text, 'baton_events_appended_total{')).toBe(2);
    expect(sample(text, 'baton_event_log_head_offset{')).toBeGreaterThanOrEqual(2);
    expect(text).toContain('# TYPE baton_batch_duration_seconds histogram');
    // The bad record made its batch partial; the others committed (inline or through the queue).
    expect(
      sample(text, 'baton_batch_duration_seconds_count{node="metrics-node",queue="gate",outcome="committed"'),
    ).toBeGreaterThan(0);
    expect(text).toContain('baton_process_resident_memory_bytes');
    expect(text).toContain('node="metrics-node"');
  });

  it('reports a named listener lag', async () => {
    const head = await node.events?.latestOffset();
    await node.events?.commitListenerOffset('default', 'slow-reader', (head ?? 0) - 1);
    const text = await (await get('/metrics')).text();
    expect(sample(text, 'baton_event_listener_lag{namespace="default",listener="slow-reader"')).toBe(1);
  });
});

describe('dashboard sessions', () => {
  it('exchange a valid token for an HttpOnly SameSite=Strict cookie that authenticates requests', async () => {
    const refused = await fetch(`${node.address}/v1/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: 'not-the-token' }),
    });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('set-cookie')).toBeNull();

    const signedIn = await fetch(`${node.address}/v1/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: TOKEN }),
    });
    expect(signedIn.status).toBe(204);
    const cookie = signedIn.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    const session = cookie.split(';')[0] ?? '';
    expect((await get('/v1/queues', { cookie: session })).status).toBe(200);
    expect((await get('/v1/queues', { cookie: 'baton_session=forged' })).status).toBe(401);

    await fetch(`${node.address}/v1/session`, { method: 'DELETE', headers: { cookie: session } });
    expect((await get('/v1/queues', { cookie: session })).status).toBe(401);
  });

  it('serves the page without the token, and no data without it', async () => {
    const page = await get('/', {});
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<title>Baton</title>');
    expect((await get('/v1/dashboard/stream', {})).status).toBe(401);
    expect((await get('/v1/session', {})).status).toBe(401);
  });
});
