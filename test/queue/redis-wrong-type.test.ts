// A Redis key of a queue holding the wrong type (a string where the error queue's list should be, a hash
// where the retry set should be, …), on real Redis: each script of the Redis queue refuses to run and changes
// nothing, the caller gets BackendUnavailableError naming the key (logged once), and once the key is fixed
// every record is processed exactly once. Then the two cases met on a running node, with /readyz, a restart,
// and a batch stranded by a script that failed halfway before the scripts checked their keys.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { sql } from 'drizzle-orm';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { BackendUnavailableError } from '../../src/errors.js';
import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import type { ClaimedBatch, ClaimedRecord, RecordFailure } from '../../src/queue/backend.js';
import { RedisQueueBackend } from '../../src/queue/redis.js';
import { openBatch } from '../../src/queue/redis-batch.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { executeIn } from '../../src/store/store.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { TestRedis } from '../support/redis.js';
import { openTestRedis } from '../support/redis.js';

const MAX_ATTEMPTS = 2;
const QUEUES = 120;
const text = (value: string): Buffer => Buffer.from(value);

type Wrong = 'string' | 'hash' | 'list';

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly key?: string;
}

function logLine(line: string): LogLine {
  const parsed: unknown = JSON.parse(line);
  const fields = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {};
  const key = typeof fields['key'] === 'string' ? { key: fields['key'] } : {};
  return { level: Number(fields['level']), msg: String(fields['msg']), ...key };
}
type Role = 'list' | 'zset' | 'hash' | 'counter' | 'batch';

/** Each role with the wrong values tried on it: a string (of the wrong shape where a string is right) and another type. */
const WRONG: Record<Role, readonly Wrong[]> = {
  list: ['string', 'hash'],
  zset: ['string', 'hash'],
  hash: ['string', 'list'],
  counter: ['string', 'hash'],
  batch: ['string', 'hash'],
};

/** The keys of a queue (its list has the queue's name), by role; `processing` is the batch's key. */
function keysOf(queue: string, processing = ''): Record<string, { key: string; role: Role }> {
  return {
    list: { key: queue, role: 'list' },
    retry: { key: `${queue}:retry`, role: 'zset' },
    'retry seq': { key: `${queue}:retry:seq`, role: 'counter' },
    batches: { key: `${queue}:batches`, role: 'hash' },
    errors: { key: `errors-${queue}`, role: 'list' },
    'error ids': { key: `errors-${queue}:ids`, role: 'list' },
    'error meta': { key: `errors-${queue}:meta`, role: 'hash' },
    'error seq': { key: `errors-${queue}:seq`, role: 'counter' },
    processing: { key: processing, role: 'batch' },
  };
}

const ERROR_KEYS = ['errors', 'error ids', 'error meta', 'error seq'];
const QUEUE_KEYS = ['list', 'retry', 'retry seq', 'batches', ...ERROR_KEYS];
/** The keys of the scripts that settle a batch (completion, recovery): all but the list, and the batch's. */
const SETTLE_KEYS = ['processing', 'batches', 'retry', 'retry seq', ...ERROR_KEYS];

/** What a scenario leaves before the broken call: the call, and where each record must end. */
interface Prepared {
  readonly call: () => Promise<unknown>;
  /** The call resolves (recovery: tried again on its next pass) instead of throwing. */
  readonly resolves?: boolean;
  /** The batch's processing key, when the call takes one. */
  readonly processing?: string;
  /** Made again once the key is fixed (what an operator does after a refused command). */
  readonly again?: boolean;
  /** Where each payload ends once the key is fixed and the queue drained. */
  readonly ends: Record<string, 'sink' | 'errors' | 'dropped'>;
}

interface Scenario {
  readonly name: string;
  readonly keys: readonly string[];
  prepare(queue: string): Promise<Prepared>;
}

describe('redis queue: a key of the wrong type', () => {
  let redis: TestRedis;
  let database: TestDatabase;
  let store: Store;
  let backend: RedisQueueBackend;
  const logLines: LogLine[] = [];
  const queues: string[] = [];
  let nextQueue = 0;

  beforeAll(async () => {
    redis = await openTestRedis();
    database = await createTestDatabase();
    const log = pino({ level: 'info' }, { write: (line: string) => logLines.push(logLine(line)) });
    store = await openPostgresStore(
      { kind: 'postgres', url: database.url, poolSize: 4, statementTimeoutMs: 0 },
      { log, startupTimeoutMs: 5000 },
    );
    await applyMigrations(store, await builtinMigrations());
    await store.execute(sql.raw('CREATE TABLE sink (v text)'));
    for (let index = 0; index < QUEUES; index++) queues.push(redis.queue());
    backend = new RedisQueueBackend({ url: redis.url, store, log, keys: newBackendKeys(queues) });
    await backend.start();
  });

  afterAll(async () => {
    await backend?.close();
    await redis?.cleanup();
    await store?.close();
    await database?.drop();
  });

  function newBackendKeys(names: readonly string[]): Record<string, string> {
    return Object.fromEntries(names.map((queue) => [queue, queue]));
  }

  function fresh(): string {
    const queue = queues[nextQueue++];
    if (!queue) throw new Error('raise QUEUES');
    return queue;
  }

  /** The handler's transaction: the records go to the sink, acknowledged. */
  function commit(batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<void> {
    return store.transaction(async (tx) => {
      for (const record of records) {
        await executeIn(tx, sql`INSERT INTO sink (v) VALUES (${record.payload.toString()})`);
      }
      await backend.acknowledge(tx, batch, records);
    });
  }

  const poisoned = (record: ClaimedRecord): boolean => record.payload.toString().endsWith('poison');

  function failure(record: ClaimedRecord, retry: boolean): RecordFailure {
    return { record, error: 'the record is poisoned', retryAt: retry ? new Date(0) : undefined };
  }

  /** Claims the queue's records for `consumer` (never registered: dead as soon as it claimed). */
  async function claimAll(queue: string, consumer: string): Promise<ClaimedBatch> {
    const batch = await backend.claim(queue, consumer, 100);
    if (!batch) throw new Error('nothing claimed');
    return batch;
  }

  /** The handler for a while: poisoned records fail until out of attempts, the others are stored. */
  async function drain(queue: string): Promise<void> {
    for (let round = 0; round < 30; round++) {
      await backend.recoverClaims(queue, { maxAttempts: MAX_ATTEMPTS });
      const batch = await backend.claim(queue, `${queue}-drainer`, 100);
      if (!batch) {
        if (await empty(queue)) return;
        continue;
      }
      const good = batch.records.filter((record) => !poisoned(record));
      if (good.length > 0) await commit(batch, good);
      const failures = batch.records
        .filter(poisoned)
        .map((record) => failure(record, record.attempts + 1 < MAX_ATTEMPTS));
      await backend.complete(batch, failures);
    }
    throw new Error(`queue ${queue} did not drain`);
  }

  async function empty(queue: string): Promise<boolean> {
    const [listed, retrying, claimed, processing] = await Promise.all([
      redis.client.llen(queue),
      redis.client.zcard(`${queue}:retry`),
      redis.client.hlen(`${queue}:batches`),
      redis.client.keys(`${queue}:processing:*`),
    ]);
    return listed + retrying + claimed + processing.length === 0;
  }

  /** Every place a payload can be, with how many times it is there. */
  async function places(queue: string): Promise<Map<string, string[]>> {
    const found = new Map<string, string[]>();
    const put = (payload: string, place: string): void => {
      found.set(payload, [...(found.get(payload) ?? []), place]);
    };
    for (const payload of await redis.client.lrange(queue, 0, -1)) put(payload, 'list');
    for (const member of await redis.client.zrange(`${queue}:retry`, 0, -1)) {
      put(member.split(':').slice(2).join(':'), 'retry');
    }
    for (const key of await redis.client.keys(`${queue}:processing:*`)) {
      const value = await redis.client.getBuffer(key);
      if (!value) continue;
      const batch = openBatch(value);
      batch.payloads.forEach((payload, index) => {
        if (batch.attempts[index] !== -1) put(payload.toString(), 'processing');
      });
    }
    for (const payload of await redis.client.lrange(`errors-${queue}`, 0, -1)) put(payload, 'errors');
    const rows = await store.execute(sql`SELECT v FROM sink WHERE v LIKE ${`${queue}/%`}`);
    for (const row of rows) put(String(row['v']), 'sink');
    return found;
  }

  /** Every key of the queue with its value (DUMP), but `except`. */
  async function snapshot(queue: string, except: string): Promise<Map<string, string>> {
    const keys = [
      ...(await redis.client.keys(`${queue}*`)),
      ...(await redis.client.keys(`errors-${queue}*`)),
    ].filter((key) => key !== except);
    const values = await Promise.all(keys.map((key) => redis.client.dumpBuffer(key)));
    return new Map(keys.map((key, index) => [key, values[index]?.toString('hex') ?? '']));
  }

  /**
   * Moves the key's value aside (under a name no queue key matches) and puts a wrong one in its place, in one
   * script (nothing can write the key between the two); returns the fix, which puts the value back.
   */
  async function breakKey(key: string, wrong: Wrong): Promise<() => Promise<void>> {
    await redis.client.eval(
      `if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[2]) end
       if ARGV[1] == 'string' then redis.call('SET', KEYS[1], 'oops')
       elseif ARGV[1] == 'hash' then redis.call('HSET', KEYS[1], 'oops', '1')
       else redis.call('RPUSH', KEYS[1], 'oops') end`,
      2,
      key,
      `aside:${key}`,
      wrong,
    );
    return async () => {
      await redis.client.eval(
        `redis.call('DEL', KEYS[1])
         if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[1]) end`,
        2,
        key,
        `aside:${key}`,
      );
    };
  }

  const linesAbout = (key: string): typeof logLines =>
    logLines.filter((line) => line.key === key && line.level >= 50);

  /** A record waiting for its retry (attempts 1), and `others` waiting in the list. */
  async function retryWaiting(queue: string, others: readonly string[]): Promise<void> {
    await backend.publish(queue, [text(`${queue}/p-poison`)]);
    const batch = await claimAll(queue, `${queue}-first`);
    await backend.complete(batch, [failure(batch.records[0]!, true)]);
    await backend.publish(queue, others.map(text));
  }

  /** A poisoned record out of attempts in the error queue (its first attempt counted as the last). */
  async function inErrorQueue(queue: string, payload: string): Promise<string> {
    await backend.publish(queue, [text(payload)]);
    const batch = await claimAll(queue, `${queue}-first`);
    const moved = await backend.complete(batch, [failure(batch.records[0]!, false)]);
    const id = moved.get(batch.records[0]!.id);
    if (id === undefined) throw new Error('not moved to the error queue');
    return id;
  }

  const scenarios: Scenario[] = [
    {
      name: 'claim (a record waiting for its retry, another in the list)',
      keys: QUEUE_KEYS,
      async prepare(queue) {
        await retryWaiting(queue, [`${queue}/a`]);
        return {
          call: () => backend.claim(queue, `${queue}-c`, 10),
          ends: { [`${queue}/p-poison`]: 'errors', [`${queue}/a`]: 'sink' },
        };
      },
    },
    {
      name: 'completion (a poisoned record out of attempts, its neighbour committed)',
      keys: SETTLE_KEYS,
      async prepare(queue) {
        await backend.publish(queue, [`${queue}/a`, `${queue}/p-poison`].map(text));
        const batch = await claimAll(queue, `${queue}-c`);
        await commit(batch, [batch.records[0]!]);
        return {
          call: () => backend.complete(batch, [failure(batch.records[1]!, false)]),
          processing: `${queue}:processing:${queue}-c:${batch.id}`,
          ends: { [`${queue}/p-poison`]: 'errors', [`${queue}/a`]: 'sink' },
        };
      },
    },
    {
      name: 'completion (a failed record to retry)',
      keys: SETTLE_KEYS,
      async prepare(queue) {
        await backend.publish(queue, [`${queue}/p-poison`, `${queue}/a`].map(text));
        const batch = await claimAll(queue, `${queue}-c`);
        await commit(batch, [batch.records[1]!]);
        return {
          call: () => backend.complete(batch, [failure(batch.records[0]!, true)]),
          processing: `${queue}:processing:${queue}-c:${batch.id}`,
          ends: { [`${queue}/p-poison`]: 'errors', [`${queue}/a`]: 'sink' },
        };
      },
    },
    {
      name: 'release (a batch given back unrun, one record of it retried before)',
      keys: ['processing', 'batches', 'list', 'retry', 'retry seq'],
      async prepare(queue) {
        await retryWaiting(queue, [`${queue}/a`, `${queue}/b`]);
        const batch = await claimAll(queue, `${queue}-c`);
        return {
          call: () => backend.release(batch, batch.records),
          processing: `${queue}:processing:${queue}-c:${batch.id}`,
          ends: { [`${queue}/p-poison`]: 'errors', [`${queue}/a`]: 'sink', [`${queue}/b`]: 'sink' },
        };
      },
    },
    {
      name: 'claim recovery (a dead consumer’s batch, one record committed)',
      keys: SETTLE_KEYS,
      async prepare(queue) {
        await backend.publish(queue, [`${queue}/a`, `${queue}/p-poison`].map(text));
        const batch = await claimAll(queue, `${queue}-dead`);
        await commit(batch, [batch.records[0]!]);
        return {
          call: () => backend.recoverClaims(queue, { maxAttempts: MAX_ATTEMPTS }),
          resolves: true,
          processing: `${queue}:processing:${queue}-dead:${batch.id}`,
          ends: { [`${queue}/p-poison`]: 'errors', [`${queue}/a`]: 'sink' },
        };
      },
    },
    {
      name: 'listing the error queue',
      keys: ERROR_KEYS,
      async prepare(queue) {
        await inErrorQueue(queue, `${queue}/p-poison`);
        return {
          call: () => backend.listErrors(queue, { limit: 10 }),
          again: true,
          ends: { [`${queue}/p-poison`]: 'errors' },
        };
      },
    },
    {
      name: 'replaying the error queue',
      keys: [...ERROR_KEYS, 'list'],
      async prepare(queue) {
        const id = await inErrorQueue(queue, `${queue}/b`);
        return {
          call: () => backend.replayErrors(queue, { ids: [id], limit: 10 }),
          again: true,
          ends: { [`${queue}/b`]: 'sink' },
        };
      },
    },
    {
      name: 'dropping from the error queue',
      keys: ERROR_KEYS,
      async prepare(queue) {
        const id = await inErrorQueue(queue, `${queue}/p-poison`);
        return {
          call: () => backend.dropErrors(queue, [id]),
          again: true,
          ends: { [`${queue}/p-poison`]: 'dropped' },
        };
      },
    },
  ];

  const cases = scenarios.flatMap((scenario) =>
    scenario.keys.flatMap((name) => {
      const role = keysOf('q')[name]!.role;
      return WRONG[role].map((wrong) => ({ scenario, name, wrong }));
    }),
  );

  /** The call on the broken key: refused (or, for recovery, put off) with nothing changed, logged once. */
  async function refusedWhole(
    queue: string,
    key: string,
    wrong: Wrong,
    before: Map<string, string>,
    prepared: Prepared,
  ): Promise<void> {
    const outcome = prepared.call();
    if (prepared.resolves) await expect(outcome).resolves.toBe(0);
    else {
      const error = await outcome.then(
        () => undefined,
        (thrown: unknown) => thrown,
      );
      expect(error).toBeInstanceOf(BackendUnavailableError);
      expect((error as Error).message).toContain(`key "${key}" holds a`);
      expect((error as BackendUnavailableError).transient).toBe(true);
    }
    // Failed whole: every other key of the queue is as it was, and the broken one still holds the wrong value.
    expect(await snapshot(queue, key)).toEqual(before);
    expect(await redis.client.type(key)).toBe(wrong);
    // Tried again: still refused, and logged once.
    await Promise.resolve(prepared.call()).catch(() => undefined);
    expect(linesAbout(key)).toHaveLength(1);
    expect(linesAbout(key)[0]?.msg).toContain(`key "${key}" holds a`);
    expect(await backend.problems()).toContainEqual(expect.stringContaining(`key "${key}" holds a`));
  }

  it.each(cases)(
    '$scenario.name: $name key holding a $wrong changes nothing, and all is processed once it is fixed',
    async ({ scenario, name, wrong }) => {
      const queue = fresh();
      const prepared = await scenario.prepare(queue);
      const { key } = keysOf(queue, prepared.processing)[name]!;
      const before = await snapshot(queue, key);
      const fix = await breakKey(key, wrong);
      try {
        await refusedWhole(queue, key, wrong, before, prepared);
      } finally {
        await fix();
      }
      if (prepared.again) await prepared.call();
      await drain(queue);
      const found = await places(queue);
      for (const [payload, end] of Object.entries(prepared.ends)) {
        expect([payload, found.get(payload) ?? []]).toEqual([payload, end === 'dropped' ? [] : [end]]);
      }
      expect([...found.keys()].sort()).toEqual(
        Object.keys(prepared.ends)
          .filter((payload) => prepared.ends[payload] !== 'dropped')
          .sort(),
      );
      expect(await backend.problems()).toEqual([]);
    },
    30_000,
  );

  it('refuses a publish onto a list key of the wrong type, naming it, and writes nothing', async () => {
    const queue = fresh();
    await redis.client.set(queue, 'oops');
    await expect(backend.publish(queue, [text('x')])).rejects.toThrow(
      new BackendUnavailableError(
        'redis',
        `key "${queue}" holds a string where a list is expected; nothing was changed, and the work waits until the key is fixed`,
      ),
    );
    await expect(backend.stats(queue)).rejects.toThrow(`key "${queue}" holds a string`);
    expect(await redis.client.get(queue)).toBe('oops');
    await redis.client.del(queue);
    expect(await backend.publish(queue, [text('x')])).toBe(1);
    expect(await backend.stats(queue)).toMatchObject({ depth: 1, inFlight: 0, errors: 0 });
  });

  it('recovers a batch a script stranded halfway before the fix, once its key is fixed, and after a restart', async () => {
    // What the completion script did before it checked its keys, with errors-<queue> holding a string: the
    // batch's entry deleted, then the push to the error queue refused; the batch left in its processing key.
    const queue = fresh();
    await backend.publish(queue, [`${queue}/a`, `${queue}/p-poison`].map(text));
    const batch = await claimAll(queue, `${queue}-old`);
    await commit(batch, [batch.records[0]!]);
    await redis.client.hdel(`${queue}:batches`, batch.id);
    await redis.client.set(`errors-${queue}`, 'oops');
    expect(await backend.stats(queue).catch((error: unknown) => String(error))).toContain(
      `key "errors-${queue}" holds a string`,
    );

    // A process started after the fix, with the key still broken: the batch is found, and waits.
    const log = pino({ level: 'warn' }, { write: () => undefined });
    const restarted = new RedisQueueBackend({ url: redis.url, store, log, keys: { [queue]: queue } });
    await restarted.start();
    try {
      expect(await restarted.recoverClaims(queue, { maxAttempts: 1 })).toBe(0);
      expect(await redis.client.keys(`${queue}:processing:*`)).toEqual([
        `${queue}:processing:${queue}-old:${batch.id}`,
      ]);
      await redis.client.del(`errors-${queue}`);
      expect(await restarted.recoverClaims(queue, { maxAttempts: 1 })).toBe(1);
    } finally {
      await restarted.close();
    }
    const found = await places(queue);
    expect(found.get(`${queue}/p-poison`)).toEqual(['errors']);
    expect(found.get(`${queue}/a`)).toEqual(['sink']);
    expect(await redis.client.keys(`${queue}:processing:*`)).toEqual([]);
    const [record] = await backend.listErrors(queue, { limit: 10 });
    expect(record).toMatchObject({ payload: text(`${queue}/p-poison`), attempts: 1 });
    expect(record?.error).toContain('a script failed halfway');
  });

  it('recovers the other batches of a queue while one processing key holds the wrong type', async () => {
    const queue = fresh();
    await backend.publish(queue, [`${queue}/a`, `${queue}/b`, `${queue}/c`].map(text));
    const first = await backend.claim(queue, `${queue}-d1`, 1);
    await backend.claim(queue, `${queue}-d2`, 1);
    if (!first) throw new Error('nothing claimed');
    const fix = await breakKey(`${queue}:processing:${queue}-d1:${first.id}`, 'hash');
    try {
      expect(await backend.recoverClaims(queue, { maxAttempts: 10 })).toBe(1);
      // Known broken now, the key does not hold back the batches claimed since.
      await backend.claim(queue, `${queue}-d3`, 1);
      expect(await backend.recoverClaims(queue, { maxAttempts: 10 })).toBe(1);
    } finally {
      await fix();
    }
    expect(await backend.recoverClaims(queue, { maxAttempts: 10 })).toBe(1);
    await drain(queue);
    const found = await places(queue);
    expect(found.get(`${queue}/a`)).toEqual(['sink']);
    expect(found.get(`${queue}/b`)).toEqual(['sink']);
    expect(found.get(`${queue}/c`)).toEqual(['sink']);
  });

  it('gives a record whose completion was refused the failure it had, when recovery settles it', async () => {
    const queue = fresh();
    await backend.publish(queue, [`${queue}/p-poison`].map(text));
    const batch = await claimAll(queue, `${queue}-c`);
    await redis.client.set(`errors-${queue}`, 'oops');
    await expect(backend.complete(batch, [failure(batch.records[0]!, false)])).rejects.toThrow(
      BackendUnavailableError,
    );
    await redis.client.del(`errors-${queue}`);
    expect(await backend.recoverClaims(queue, { maxAttempts: 1 })).toBe(1);
    const [record] = await backend.listErrors(queue, { limit: 10 });
    expect(record).toMatchObject({ payload: text(`${queue}/p-poison`), attempts: 1 });
    expect(record?.error).toBe('the record is poisoned');
  });
});

describe('a running node with a Redis key of the wrong type', () => {
  const words = fileURLToPath(new URL('../node/handlers/words.ts', import.meta.url));
  /** Stores {"id": n} records in `items`, about 15 ms each; any other record fails. */
  const slow = fileURLToPath(new URL('../fixtures/slow-handler.ts', import.meta.url));
  let redis: TestRedis;
  let node: BatonNode | undefined;
  const dirs: string[] = [];
  const lines: LogLine[] = [];

  beforeAll(async () => {
    redis = await openTestRedis();
  });

  afterAll(async () => {
    await node?.stop();
    await redis?.cleanup();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  /** A data folder of the test's own (its embedded store, the sink). */
  async function folder(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'baton-wrong-type-'));
    dirs.push(dir);
    return dir;
  }

  async function start(
    dir: string,
    queue: string,
    options: { maxAttempts: number; retryDelayMs: number; handler: string },
  ): Promise<BatonNode> {
    node = await startNode(
      {
        node: { name: 'wrong-type', data_dir: dir, shutdown_timeout_ms: 5000 },
        http: { port: 0 },
        redis: { url: redis.url },
        queues: {
          [queue]: {
            handler: options.handler,
            backend: 'redis',
            batch_size: 500,
            max_attempts: options.maxAttempts,
            retry_delay_ms: options.retryDelayMs,
            retry_max_delay_ms: options.retryDelayMs,
          },
        },
      },
      { log: pino({ level: 'info' }, { write: (line: string) => lines.push(logLine(line)) }) },
    );
    return node;
  }

  async function readyz(running: BatonNode): Promise<{ status: number; body: Record<string, unknown> }> {
    const response = await fetch(`${running.address}/readyz`);
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  const stored = async (running: BatonNode): Promise<string[]> =>
    (await running.admin.sql('SELECT word FROM words ORDER BY word')).rows.map((row) => String(row['word']));
  const items = async (running: BatonNode): Promise<{ n: number; distinct: number }> => {
    const [row] = (
      await running.admin.sql('SELECT count(*)::int AS n, count(DISTINCT id)::int AS d FROM items')
    ).rows;
    return { n: Number(row?.['n']), distinct: Number(row?.['d']) };
  };

  it('the list key set to a string while a record waits for its retry: the record waits, /readyz names the key, and it is processed once after the fix', async () => {
    const queue = redis.queue();
    const running = await start(await folder(), queue, {
      maxAttempts: 2,
      retryDelayMs: 1500,
      handler: words,
    });
    try {
      await running.ingest(queue, [text('fail')]);
      await vi.waitFor(async () => expect(await redis.client.zcard(`${queue}:retry`)).toBe(1), {
        timeout: 20_000,
      });
      await redis.client.set(queue, 'oops');
      await vi.waitFor(
        async () => {
          const ready = await readyz(running);
          expect(ready.status).toBe(503);
          expect(ready.body['problems']).toEqual([
            `queue "${queue}": key "${queue}" holds a string where a list is expected`,
          ]);
        },
        { timeout: 20_000 },
      );
      // Due, and the claims are refused: the record stays in the retry set.
      await vi.waitFor(
        () => expect(lines.some((line) => line.key === queue && line.level >= 50)).toBe(true),
        {
          timeout: 20_000,
        },
      );
      await new Promise((resolve) => setTimeout(resolve, 2000));
      expect(await redis.client.zcard(`${queue}:retry`)).toBe(1);
      await expect(running.ingest(queue, [text('alpha')])).rejects.toThrow(`key "${queue}" holds a string`);

      await redis.client.del(queue);
      await vi.waitFor(async () => expect((await readyz(running)).status).toBe(200), { timeout: 20_000 });
      await running.ingest(queue, [text('alpha')]);
      await vi.waitFor(
        async () => expect((await running.admin.listErrors(queue, { limit: 10 })).length).toBe(1),
        { timeout: 60_000 },
      );
      await vi.waitFor(async () => expect(await stored(running)).toEqual(['alpha']), { timeout: 20_000 });
      const [record] = await running.admin.listErrors(queue, { limit: 10 });
      expect(record).toMatchObject({ payload: text('fail'), attempts: 2 });
      expect(await redis.client.zcard(`${queue}:retry`)).toBe(0);
      expect(lines.filter((line) => line.key === queue && line.level >= 50)).toHaveLength(1);
      expect(lines.some((line) => line.key === queue && line.msg.includes('usable again'))).toBe(true);
    } finally {
      await running.stop();
      node = undefined;
    }
  }, 120_000);

  it('errors-<queue> holding a string when a poisoned record completes: it waits in its batch, then ends in the error queue once, also across a restart', async () => {
    const queue = redis.queue();
    const dir = await folder();
    let running = await start(dir, queue, { maxAttempts: 1, retryDelayMs: 50, handler: slow });
    try {
      const records = [...Array.from({ length: 60 }, (_, id) => JSON.stringify({ id })), 'poison'];
      await running.ingest(queue, records.map(text));
      // While the batch runs (60 records of 15 ms, then the poisoned one isolated), the key is broken.
      await vi.waitFor(async () => expect(await redis.client.hlen(`${queue}:batches`)).toBe(1), {
        timeout: 20_000,
        interval: 5,
      });
      await redis.client.set(`errors-${queue}`, 'oops');
      await vi.waitFor(async () => expect(await items(running)).toEqual({ n: 60, distinct: 60 }), {
        timeout: 30_000,
      });
      await vi.waitFor(
        async () => {
          const ready = await readyz(running);
          expect(ready.status).toBe(503);
          expect(ready.body['problems']).toEqual([
            `queue "${queue}": key "errors-${queue}" holds a string where a list is expected`,
          ]);
        },
        { timeout: 20_000 },
      );
      // Its completion refused, the record waits in its batch's processing key, which the batches hash
      // still names: recovery finds it. The queue's figures name the key instead of showing nothing.
      await vi.waitFor(() => expect(lines.some((line) => line.key === `errors-${queue}`)).toBe(true), {
        timeout: 20_000,
      });
      expect(await redis.client.hlen(`${queue}:batches`)).toBe(1);
      expect(await redis.client.keys(`${queue}:processing:*`)).toHaveLength(1);
      await expect(running.admin.queues()).rejects.toThrow(`key "errors-${queue}" holds a string`);

      // Stopped while the key is broken, fixed, started again: the record is recovered, once.
      await running.stop();
      await redis.client.del(`errors-${queue}`);
      running = await start(dir, queue, { maxAttempts: 1, retryDelayMs: 50, handler: slow });
      await vi.waitFor(
        async () => expect((await running.admin.listErrors(queue, { limit: 10 })).length).toBe(1),
        { timeout: 30_000 },
      );
      const [record] = await running.admin.listErrors(queue, { limit: 10 });
      expect(record).toMatchObject({ payload: text('poison'), attempts: 1 });
      expect(await items(running)).toEqual({ n: 60, distinct: 60 });
      expect(await redis.client.hlen(`${queue}:batches`)).toBe(0);
      expect(await redis.client.keys(`${queue}:processing:*`)).toEqual([]);
      expect((await readyz(running)).status).toBe(200);
      expect(lines.filter((line) => line.key === `errors-${queue}` && line.level >= 50)).toHaveLength(1);
    } finally {
      await running.stop();
      node = undefined;
    }
  }, 120_000);
});
