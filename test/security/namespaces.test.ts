// Tokens limited to namespaces: such a token reads, writes and streams its own namespaces only, sees the
// listener offsets and task runs of its namespaces only, and cannot stop another namespace's task run; it
// has no admin scope (no sql, initdb, migrate, failover, replay), no metrics, and no queue it does not name.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import { TEAM_TASKS } from './team-tasks.js';

const ADMIN = 'admin-token-0123456789';
const TEAM_A = 'team-a-token-0123456789';
let dir: string;
let node: BatonNode;

function call(token: string, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${node.address}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-namespaces-'));
  node = await startNode(
    {
      node: { name: 'ns-node', data_dir: dir },
      http: { port: 0, token: ADMIN, tokens: [{ token: TEAM_A, namespaces: ['team-a'] }] },
      ...TEAM_TASKS,
    },
    { log: createLogger({ level: 'silent' }) },
  );
});

afterAll(async () => {
  await node.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('a token limited to namespace team-a', () => {
  it('writes and reads team-a only', async () => {
    expect((await call(TEAM_A, 'POST', '/v1/events', { namespace: 'team-a', key: 'k' })).status).toBe(201);
    const refused = await call(TEAM_A, 'POST', '/v1/events', { namespace: 'team-b', key: 'k' });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: string }).error).toMatch(/team-a/);
    // A batch with one event of another namespace is refused whole.
    const mixed = await call(TEAM_A, 'POST', '/v1/events', [
      { namespace: 'team-a', key: 'k' },
      { namespace: 'default', key: 'k' },
    ]);
    expect(mixed.status).toBe(403);
    expect(await node.events?.count({ namespace: 'default' })).toEqual({ count: 0, capped: false });

    expect((await call(TEAM_A, 'GET', '/v1/events?namespace=team-a&from=0')).status).toBe(200);
    for (const path of [
      '/v1/events?namespace=team-b',
      '/v1/events',
      '/v1/events/count',
      '/v1/events/count?namespace=team-b',
      '/v1/events/stream?namespace=team-b',
      '/v1/events/stream',
      '/v1/events/listeners/x?namespace=team-b',
    ]) {
      expect((await call(TEAM_A, 'GET', path)).status, path).toBe(403);
    }
    expect((await call(TEAM_A, 'PUT', '/v1/events/listeners/x?namespace=team-b', { offset: 1 })).status).toBe(
      403,
    );
  });

  it('sees and stops the task runs of team-a only', async () => {
    await call(ADMIN, 'POST', '/v1/events', [
      { namespace: 'team-a', key: 'go' },
      { namespace: 'team-b', key: 'go' },
    ]);
    await expect
      .poll(async () => (await node.admin.taskRuns({ state: 'running' })).length, { timeout: 20_000 })
      .toBe(2);
    const seen = (await (await call(TEAM_A, 'GET', '/v1/tasks')).json()) as {
      runs: Array<{ id: string; task: string }>;
    };
    expect(seen.runs.map((run) => run.task)).toEqual(['a']);
    const other = (await node.admin.taskRuns({ task: 'b' }))[0];
    expect((await call(TEAM_A, 'POST', `/v1/tasks/runs/${other?.id ?? 'x'}/stop`)).status).toBe(404);
    const own = seen.runs[0];
    expect((await call(TEAM_A, 'POST', `/v1/tasks/runs/${own?.id ?? 'x'}/stop`)).status).toBe(200);
    await expect
      .poll(async () => (await node.admin.taskRuns({ task: 'a' }))[0]?.state, { timeout: 20_000 })
      .toBe('stopped');
    expect((await node.admin.taskRuns({ task: 'b' }))[0]?.state).toBe('running');
  });

  it('reaches no sql, admin route, metrics or queue', async () => {
    await call(ADMIN, 'POST', '/v1/events', { namespace: 'team-b', key: 'secret', value: 'of team-b' });
    const sql = await call(TEAM_A, 'POST', '/v1/sql', {
      sql: "CREATE TABLE stolen AS SELECT * FROM baton_events WHERE namespace = 'team-b'",
    });
    expect(sql.status).toBe(403);
    expect(((await sql.json()) as { code: string; error: string }).error).toContain('"admin" scope');
    const tables = await node.admin.sql(
      `SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name = 'stolen'`,
    );
    expect(tables.rows[0]?.['n']).toBe(0);
    for (const [method, path] of [
      ['POST', '/v1/initdb'],
      ['POST', '/v1/migrate'],
      ['POST', '/v1/cluster/failover'],
      ['POST', '/v1/queues/words/errors/replay'],
      ['GET', '/v1/queues/words/errors'],
      ['POST', '/v1/queues/words/records'],
      ['GET', '/metrics'],
    ] as const) {
      expect((await call(TEAM_A, method, path, method === 'POST' ? {} : undefined)).status, path).toBe(403);
    }
    // The admin token still does all of it.
    expect((await call(ADMIN, 'POST', '/v1/sql', { sql: 'select 1 AS one' })).status).toBe(200);
    expect((await call(ADMIN, 'GET', '/metrics')).status).toBe(200);
  });

  it('lists the lag of team-a listeners only', async () => {
    await node.events?.commitListenerOffset('team-a', 'mine', 0);
    await node.events?.commitListenerOffset('team-b', 'theirs', 0);
    const listed = (await (await call(TEAM_A, 'GET', '/v1/events/listeners')).json()) as {
      listeners: Array<{ name: string }>;
    };
    expect(listed.listeners.map((listener) => listener.name)).toEqual(['mine']);
  });
});
