// The dashboard stream over real connections: it shows a token limited to team-a and queue `words` only the
// task runs of team-a and the queue `words` (the rule of /v1/tasks and /v1/queues), needs the read scope,
// and is capped per client address and in all (429 beyond, a slot freed when a stream ends).
import { mkdtemp, rm } from 'node:fs/promises';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import { openStream } from '../events/support.js';
import { TEAM_TASKS } from './team-tasks.js';

const ADMIN = 'admin-token-0123456789';
const TEAM_A = 'team-a-token-0123456789';
const METRICS = 'metrics-token-0123456789';
let dir: string;
let node: BatonNode;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-scope-streams-'));
  node = await startNode(
    {
      node: { name: 'streams', data_dir: dir },
      http: {
        port: 0,
        token: ADMIN,
        tokens: [
          { token: TEAM_A, namespaces: ['team-a'], queues: ['words'] },
          { token: METRICS, scopes: ['metrics'] },
        ],
      },
      queues: {
        words: { handler: fileURLToPath(new URL('../node/handlers/words.ts', import.meta.url)) },
        ids: { handler: fileURLToPath(new URL('../fixtures/ids-handler.ts', import.meta.url)) },
      },
      ...TEAM_TASKS,
    },
    { log: createLogger({ level: 'silent' }) },
  );
});

afterAll(async () => {
  await node.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Open streams of a test, closed after it whatever happens. */
const open: Array<{ close(): void }> = [];
afterEach(() => {
  for (const stream of open.splice(0)) stream.close();
});

interface Snapshot {
  queues: Array<{ name: string }>;
  tasks: Array<{ task: string; namespace: string }> | null;
}

async function firstSnapshot(token: string): Promise<Snapshot> {
  const stream = await openStream(`${node.address}/v1/dashboard/stream`, { token });
  open.push(stream);
  expect(stream.status).toBe(200);
  const [message] = await stream.take(1, 20_000);
  stream.close();
  return message?.data as unknown as Snapshot;
}

/** Opens a stream from `localAddress`, waiting for a slot that an ended stream of an earlier step holds. */
async function openFrom(localAddress: string): Promise<void> {
  await expect.poll(async () => (await rawStream(localAddress)).status, { timeout: 20_000 }).toBe(200);
}

/** A raw stream request from `localAddress` (any 127.x address reaches a node on 127.0.0.1). */
function rawStream(localAddress: string): Promise<{ status: number; retryAfter: string | undefined }> {
  const url = new URL('/v1/dashboard/stream', node.address);
  return new Promise((resolve, reject) => {
    const request: ClientRequest = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        localAddress,
        headers: { authorization: `Bearer ${ADMIN}`, accept: 'text/event-stream' },
      },
      (response: IncomingMessage) => {
        const retryAfter = response.headers['retry-after'];
        if (response.statusCode === 200) open.push({ close: () => request.destroy() });
        else response.resume();
        resolve({ status: response.statusCode ?? 0, retryAfter });
      },
    );
    request.setTimeout(20_000, () => request.destroy(new Error('no answer within 20 s')));
    request.on('error', reject);
    request.end();
  });
}

describe('the dashboard stream of a limited token', () => {
  it('shows the task runs and queues the token may read, and no others', async () => {
    const started = await fetch(`${node.address}/v1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify([
        { namespace: 'team-a', key: 'go' },
        { namespace: 'team-b', key: 'go' },
      ]),
    });
    expect(started.status).toBe(201);
    await expect
      .poll(async () => (await node.admin.taskRuns({ state: 'running' })).length, { timeout: 30_000 })
      .toBe(2);

    const everything = await firstSnapshot(ADMIN);
    expect(everything.tasks?.map((run) => run.task).sort()).toEqual(['a', 'b']);
    expect(everything.queues.map((queue) => queue.name).sort()).toEqual(['ids', 'words']);

    const limited = await firstSnapshot(TEAM_A);
    expect(limited.tasks?.map((run) => `${run.task}@${run.namespace}`)).toEqual(['a@team-a']);
    expect(limited.queues.map((queue) => queue.name)).toEqual(['words']);
  });

  it('needs the read scope', async () => {
    const response = await fetch(`${node.address}/v1/dashboard/stream`, {
      headers: { authorization: `Bearer ${METRICS}` },
    });
    expect(response.status).toBe(403);
    expect(((await response.json()) as { error: string }).error).toContain('"read" scope');
  });
});

describe('dashboard stream caps', () => {
  it('refuses a ninth stream from one client address with 429, and takes it once one ends', async () => {
    for (let index = 0; index < 8; index++) await openFrom('127.0.0.1');
    const refused = await rawStream('127.0.0.1');
    expect(refused.status).toBe(429);
    expect(refused.retryAfter).toBeDefined();
    // Another address is not held back by this one.
    expect((await rawStream('127.0.0.2')).status).toBe(200);
    open.shift()?.close();
    await openFrom('127.0.0.1');
  });

  it('refuses a stream beyond 64 in all, whatever the address', async () => {
    for (let client = 0; client < 8; client++) {
      for (let index = 0; index < 8; index++) {
        await openFrom(`127.0.1.${client + 1}`);
      }
    }
    const refused = await rawStream('127.0.2.1');
    expect(refused.status).toBe(429);
    open.shift()?.close();
    await openFrom('127.0.2.1');
  });
});
