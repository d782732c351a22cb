// NotificationClient over HTTP and in-process on the embedded store: sends with offsets, the task-run context,
// listeners from latest / an offset / a time, named listeners that resume, a throwing processor that gets
// its batch again, namespace isolation, and tokens limited to namespaces.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode, StoredEvent } from '../../src/index.js';
import { ForbiddenError, NotificationClient, startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import { assertConsecutive, call, openStream, until } from './support.js';

const log = createLogger({ level: 'silent' });
const FAST_RETRY = { initialMs: 20, maxMs: 200 };
const ADMIN_TOKEN = 'admin-token-1234';
const TEAM_TOKEN = 'team-a-token-1234';

let node: BatonNode;
let dir: string;
let base: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-client-'));
  node = await startNode(
    {
      node: { name: 'client-node', data_dir: dir, shutdown_timeout_ms: 5000 },
      http: { port: 0, tokens: [{ token: ADMIN_TOKEN }, { token: TEAM_TOKEN, namespaces: ['team-a'] }] },
    },
    { log },
  );
  base = node.address ?? '';
});

afterAll(async () => {
  await node.stop();
  await rm(dir, { recursive: true, force: true });
});

/** A processor that records what it got. */
function recorder(): { events: StoredEvent[]; process: (batch: readonly StoredEvent[]) => void } {
  const events: StoredEvent[] = [];
  return { events, process: (batch) => void events.push(...batch) };
}

describe.each([
  [
    'http',
    (options: ConstructorParameters<typeof NotificationClient>[1]) =>
      new NotificationClient(base, { token: ADMIN_TOKEN, ...options }),
  ],
  [
    'in-process',
    (options: ConstructorParameters<typeof NotificationClient>[1]) => new NotificationClient(node, options),
  ],
])('NotificationClient (%s)', (kind, makeClient) => {
  const clients: NotificationClient[] = [];
  const client = (namespace: string, options: ConstructorParameters<typeof NotificationClient>[1] = {}) => {
    const made = makeClient({
      namespace: `${kind}-${namespace}`,
      log,
      retry: FAST_RETRY,
      env: {},
      ...options,
    });
    clients.push(made);
    return made;
  };

  afterAll(async () => {
    await Promise.all(clients.map((made) => made.close()));
  });

  it('sends events and returns them with their offsets', async () => {
    const producer = client('send', { sender: 'tester' });
    const first = await producer.sendEvent('greeting', 'hello', { context: { trace: 1 } });
    const second = await producer.sendEvent('greeting');
    expect(first).toMatchObject({
      key: 'greeting',
      value: 'hello',
      sender: 'tester',
      context: '{"trace":1}',
      duplicate: false,
    });
    expect(second.offset).toBeGreaterThan(first.offset);
    expect(second.value).toBeNull();
    const listed = await producer.listEvents({ keys: ['greeting'] });
    expect(listed.map((event) => event.offset)).toEqual([first.offset, second.offset]);
    expect(await producer.countEvents()).toBe(2);
    expect(await producer.timeToOffset(new Date(Date.now() + 60_000))).toBeGreaterThanOrEqual(second.offset);
  });

  it('puts the task run into the context inside a task run, unless a context is given', async () => {
    const producer = client('task-run', { env: { BATON_TASK_RUN: 'run-42' } });
    const plain = await producer.sendEvent('done');
    const own = await producer.sendEvent('done', null, { context: '{"mine":true}' });
    expect(JSON.parse(plain.context ?? 'null')).toEqual({ taskRun: 'run-42' });
    expect(own.context).toBe('{"mine":true}');
  });

  it('delivers only new events from latest, the history from 0, and later ones from a time', async () => {
    const producer = client('from');
    const old = await producer.sendEvent('k', 'old');
    const latest = recorder();
    const all = recorder();
    const since = recorder();
    await producer.registerListener(latest.process, ['k']);
    await producer.registerListener(all.process, 'k', { from: 0 });
    await producer.registerListener(since, ['k'], { from: new Date(old.createTime) });
    const fresh = await producer.sendEvent('k', 'new');
    await until(
      () => latest.events.length >= 1 && all.events.length >= 2 && since.events.length >= 1,
      15_000,
      'deliveries',
    );
    expect(latest.events.map((event) => event.value)).toEqual(['new']);
    expect(all.events.map((event) => event.value)).toEqual(['old', 'new']);
    expect(since.events.map((event) => event.offset)).toEqual([fresh.offset]);
  });

  it('gives a throwing processor the same events again until it succeeds', async () => {
    const producer = client('retry');
    const attempts: number[][] = [];
    const id = await producer.registerListener(
      (batch) => {
        attempts.push(batch.map((event) => event.offset));
        if (attempts.length <= 3) throw new Error('not yet');
      },
      ['job'],
    );
    const sent = await producer.sendEvent('job', '1');
    await until(() => attempts.length >= 4, 15_000, 'four attempts');
    expect(attempts.slice(0, 4).every((offsets) => offsets[0] === sent.offset)).toBe(true);
    const after = await producer.sendEvent('job', '2');
    await until(() => attempts.at(-1)?.includes(after.offset) === true, 15_000, 'the next event');
    expect(producer.listenerOffset(id)).toBe(after.offset);
    await producer.unregisterListener(id);
    expect(producer.listenerOffset(id)).toBeUndefined();
  });

  it('keeps namespaces apart', async () => {
    const a = client('ns-a');
    const b = client('ns-b');
    const seenA = recorder();
    const seenB = recorder();
    await a.registerListener(seenA.process, ['shared']);
    await b.registerListener(seenB.process, ['shared']);
    await a.sendEvent('shared', 'from a');
    await b.sendEvent('shared', 'from b');
    await a.sendEvent('shared', 'from a again');
    await until(() => seenA.events.length >= 2 && seenB.events.length >= 1, 15_000, 'deliveries');
    // Give a wrongly routed event time to arrive: the last event of a was sent after b's.
    expect(seenA.events.map((event) => event.value)).toEqual(['from a', 'from a again']);
    expect(seenB.events.map((event) => event.value)).toEqual(['from b']);
    expect(await a.countEvents()).toBe(2);
  });

  it('resumes a named listener after its last processed batch', async () => {
    const producer = client('named');
    const first = recorder();
    const id = await producer.registerListener(first.process, ['step'], { name: 'worker', from: 0 });
    await producer.sendEvents([
      { key: 'step', value: '1' },
      { key: 'step', value: '2' },
    ]);
    await until(() => first.events.length >= 2, 15_000, 'the first two events');
    await producer.unregisterListener(id);
    await producer.sendEvent('step', '3');
    const second = recorder();
    await producer.registerListener(second.process, ['step'], { name: 'worker', from: 0 });
    await producer.sendEvent('step', '4');
    await until(() => second.events.length >= 2, 15_000, 'the remaining events');
    expect(second.events.map((event) => event.value)).toEqual(['3', '4']);
    assertConsecutive([...first.events, ...second.events].map((event) => event.offset));
  });
});

describe('tokens limited to namespaces', () => {
  it('may use their namespaces only', async () => {
    const team = new NotificationClient(base, { token: TEAM_TOKEN, namespace: 'team-a', env: {}, log });
    const stray = new NotificationClient(base, { token: TEAM_TOKEN, namespace: 'team-b', env: {}, log });
    try {
      const sent = await team.sendEvent('deploy', 'v1');
      expect(sent.namespace).toBe('team-a');
      expect((await team.listEvents()).map((event) => event.value)).toEqual(['v1']);
      await expect(stray.sendEvent('deploy')).rejects.toThrow(ForbiddenError);
      await expect(stray.sendEvent('deploy')).rejects.toThrow(/may not use namespace "team-b"/);
      await expect(stray.registerListener(() => undefined, ['deploy'])).rejects.toThrow(ForbiddenError);
      await expect(stray.listEvents()).rejects.toThrow(ForbiddenError);
    } finally {
      await team.close();
      await stray.close();
    }
  });

  it('are refused over plain HTTP: 401 without a token, 403 outside their namespaces', async () => {
    expect((await call(base, 'GET', '/v1/events?namespace=team-a')).status).toBe(401);
    const everywhere = await call(base, 'GET', '/v1/events', { token: TEAM_TOKEN });
    expect(everywhere.status).toBe(403);
    expect(String(everywhere.body['error'])).toMatch(/limited to namespaces team-a/);
    expect((await call(base, 'GET', '/v1/events/count?namespace=team-b', { token: TEAM_TOKEN })).status).toBe(
      403,
    );
    expect(
      (await call(base, 'GET', '/v1/events/listeners/x?namespace=team-b', { token: TEAM_TOKEN })).status,
    ).toBe(403);
    const batch = await call(base, 'POST', '/v1/events', {
      token: TEAM_TOKEN,
      json: [
        { key: 'ok', namespace: 'team-a' },
        { key: 'no', namespace: 'team-b' },
      ],
    });
    expect(batch.status).toBe(403);
    expect(String(batch.body['error'])).toMatch(/events\[1\]/);
    expect(
      (await call(base, 'GET', '/v1/events/count?namespace=team-a&key=ok', { token: ADMIN_TOKEN })).body[
        'count'
      ],
    ).toBe(0);
    const stream = await openStream(`${base}/v1/events/stream?namespace=team-b`, { token: TEAM_TOKEN });
    expect(stream.status).toBe(403);
    stream.close();
    const allowed = await openStream(`${base}/v1/events/stream?namespace=team-a`, { token: TEAM_TOKEN });
    expect(allowed.status).toBe(200);
    allowed.close();
    expect((await call(base, 'GET', '/v1/events', { token: ADMIN_TOKEN })).status).toBe(200);
  });
});
