// While the PostgreSQL store is down, a node answers what it cannot do with 503 and Retry-After (a transient
// error, BACKEND_UNAVAILABLE), not with a refusal; an HTTP event client keeps retrying, and its event is
// stored exactly once when the store is back. Its role stays observable: /v1/cluster and /metrics answer
// with it. On a private server, stopped and started by the test.
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { EventClient } from '../../src/index.js';
import type { PrivatePostgres } from '../support/private-services.js';
import { startPrivatePostgres } from '../support/private-services.js';
import { cleanupAll, FIXTURES_DIR, freePort, startBatonNode, tempProject } from '../support/process.js';

let server: PrivatePostgres | undefined;

afterEach(async () => {
  await cleanupAll();
  await server?.dispose();
  server = undefined;
});

const silent = { info: () => undefined, warn: () => undefined };

describe('a PostgreSQL store that is down', () => {
  it('makes ingest and event appends answer 503 with Retry-After; a retrying event client stores its event once', async () => {
    server = await startPrivatePostgres();
    const port = await freePort();
    const project = await tempProject({
      toml:
        `[node]\nname = "outage"\ndata_dir = "data"\n[log]\nlevel = "warn"\n[http]\nport = ${port}\n` +
        `[store]\nurl = "${server.url}"\npool_size = 2\nquery_timeout_ms = 5000\n` +
        `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\n`,
    });
    const node = await startBatonNode(project.configPath);
    await server.stop();

    const ingest = await fetch(`${node.url}/v1/queues/ids/records`, { method: 'POST', body: '{"id":1}' });
    expect(ingest.status).toBe(503);
    expect(ingest.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(await ingest.json()).toMatchObject({ code: 'BACKEND_UNAVAILABLE' });

    const append = await fetch(`${node.url}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ key: 'refused' }),
    });
    expect(append.status).toBe(503);
    expect(append.headers.get('retry-after')).toMatch(/^\d+$/);

    const client = new EventClient(node.url, { env: {}, log: silent, sendTimeoutMs: 120_000 });
    try {
      let settled = false;
      const sending = client.sendEvent('outage.over', 'once').finally(() => (settled = true));
      // The client is still at it when the store comes back, however long this machine took so far.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      expect(settled).toBe(false);
      await server.start();
      const sent = await sending;
      expect(sent.key).toBe('outage.over');
      const stored = await client.listEvents({ keys: ['outage.over'] });
      expect(stored.map((event) => event.offset)).toEqual([sent.offset]);
    } finally {
      await client.close();
    }
    expect(node.process.exitCode).toBeNull();
    expect((await node.stop()).code).toBe(0);
  }, 120_000);

  it('keeps the role observable: /v1/cluster and /metrics answer with it, /v1/queues answers 503 with a reason', async () => {
    server = await startPrivatePostgres();
    const port = await freePort();
    const project = await tempProject({
      toml:
        `[node]\nname = "observed"\ndata_dir = "data"\n[log]\nlevel = "warn"\n[http]\nport = ${port}\n` +
        `[store]\nurl = "${server.url}"\npool_size = 2\nquery_timeout_ms = 5000\n` +
        `[group]\nname = "alone"\nelector = "standalone"\n` +
        `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\n`,
    });
    const node = await startBatonNode(project.configPath);
    await server.stop();

    const cluster = await fetch(`${node.url}/v1/cluster`);
    expect(cluster.status).toBe(200);
    expect(await cluster.json()).toMatchObject({
      group: 'alone',
      role: 'primary',
      members: [],
      members_problem: expect.stringMatching(/cannot be read/) as unknown,
    });
    const metrics = await fetch(`${node.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/baton_role\{[^}]*role="primary"[^}]*\} 1/);
    const queues = await fetch(`${node.url}/v1/queues`);
    expect(queues.status).toBe(503);
    expect(queues.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(await queues.json()).toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      error: expect.stringMatching(/store/) as unknown,
    });
    const readiness = await fetch(`${node.url}/readyz`);
    expect(readiness.status).toBe(503);
    expect(node.process.exitCode).toBeNull();
    expect((await node.stop()).code).toBe(0);
  }, 120_000);
});
