// Schedules over HTTP with tokens: GET /v1/schedules shows a namespace-limited token the schedules of its
// namespaces; POST /v1/schedules/:name/fire needs write, and a limited token fires only schedules whose
// namespaces and queue it may use.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';

const handler = fileURLToPath(new URL('../node/handlers/words.ts', import.meta.url));
const ADMIN = 'admin-token-0123456789';
const TEAM = 'team-ops-token-0123456789';
const READER = 'reader-token-0123456789';

let dir: string;
let node: BatonNode;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-schedules-http-'));
  node = await startNode(
    {
      node: { name: 'timed', data_dir: dir },
      http: {
        port: 0,
        token: ADMIN,
        tokens: [
          { token: TEAM, scopes: ['read', 'write'], namespaces: ['ops'], queues: ['other'] },
          { token: READER, scopes: ['read'] },
        ],
      },
      queues: { words: { handler } },
      schedules: {
        'ops-beat': { cron: '0 0 1 1 *', namespace: 'ops', event: { namespace: 'ops', key: 'beat' } },
        'ops-words': { cron: '0 0 1 1 *', namespace: 'ops', publish: { queue: 'words', payload: 'tick' } },
        nightly: { cron: '0 3 * * *', event: { key: 'nightly' } },
      },
    },
    { log: createLogger({ level: 'silent' }) },
  );
});

afterAll(async () => {
  await node?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function call(token: string, method: string, path: string): Promise<Response> {
  return fetch(`${node.address}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(method === 'POST' ? { 'content-type': 'application/json' } : {}),
    },
    ...(method === 'POST' ? { body: '{}' } : {}),
  });
}

describe('schedules over HTTP', () => {
  it('lists the schedules of the token namespaces', async () => {
    const all = (await (await call(ADMIN, 'GET', '/v1/schedules')).json()) as {
      schedules: Array<{ name: string }>;
    };
    expect(all.schedules.map((schedule) => schedule.name)).toEqual(['nightly', 'ops-beat', 'ops-words']);
    const team = (await (await call(TEAM, 'GET', '/v1/schedules')).json()) as {
      schedules: Array<{ name: string }>;
    };
    expect(team.schedules.map((schedule) => schedule.name)).toEqual(['ops-beat', 'ops-words']);
  });

  it('fires with write on what the token reaches, and refuses the rest', async () => {
    const fired = await call(TEAM, 'POST', '/v1/schedules/ops-beat/fire');
    expect(fired.status).toBe(200);
    const body = (await fired.json()) as { schedule: string; tick: string; term: number; applied: boolean };
    expect(body).toMatchObject({ schedule: 'ops-beat', term: 0, applied: true });
    const events = await node.events?.list({ namespace: 'ops', keys: ['beat'] });
    expect(events?.map((event) => event.value)).toEqual([body.tick]);

    // Another namespace, a queue the token may not use, no write scope, an unknown schedule.
    expect((await call(TEAM, 'POST', '/v1/schedules/nightly/fire')).status).toBe(403);
    expect((await call(TEAM, 'POST', '/v1/schedules/ops-words/fire')).status).toBe(403);
    expect((await call(READER, 'POST', '/v1/schedules/nightly/fire')).status).toBe(403);
    expect((await call(ADMIN, 'POST', '/v1/schedules/nope/fire')).status).toBe(404);
    expect((await call(ADMIN, 'POST', '/v1/schedules/ops-words/fire')).status).toBe(200);
  });
});
