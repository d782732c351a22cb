// The LISTEN/NOTIFY processor on a real PostgreSQL server (catch-up first, coalescing, catch-up after a
// killed LISTEN connection) and on embedded PGlite (polling).
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';

import type { ComponentContext } from '../../src/components/component.js';
import { createNotifyProcessor } from '../../src/components/notify-processor.js';
import { Supervisor } from '../../src/components/supervisor.js';
import { InvalidComponentError } from '../../src/errors.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Notification, Store } from '../../src/store/store.js';
import { openTempStore } from '../support/pglite.js';
import type { TempStore } from '../support/pglite.js';
import { createTestDatabase } from '../support/postgres.js';
import type { TestDatabase } from '../support/postgres.js';
import { captureLog } from './support.js';

const WAIT = { timeout: 15_000, interval: 10 };

interface Call {
  readonly notifications: readonly Notification[];
  readonly handled: readonly number[];
}

/**
 * A processor in the river style: each call handles every unhandled row (the notifications are hints).
 * `gate`, while set, holds calls with notifications so that a burst piles up behind one of them.
 */
function river(store: Store, channel: string) {
  const calls: Call[] = [];
  let running = 0;
  let overlapped = false;
  let gate: Promise<void> | undefined;
  const process = async (ctx: ComponentContext, notifications: readonly Notification[]): Promise<void> => {
    running += 1;
    if (running > 1) overlapped = true;
    try {
      if (notifications.length > 0 && gate) await gate;
      const result = await store.query('UPDATE items SET handled = true WHERE NOT handled RETURNING id');
      calls.push({ notifications, handled: result.rows.map((row) => Number(row['id'])) });
      ctx.log.debug({ count: notifications.length }, 'processed');
    } finally {
      running -= 1;
    }
  };
  const component = createNotifyProcessor({
    name: `river-${channel}`,
    channels: [channel],
    runOn: 'primary',
    process,
  });
  return {
    component,
    calls,
    overlapped: () => overlapped,
    hold(): () => void {
      let open = (): void => undefined;
      gate = new Promise((resolve) => (open = resolve));
      return () => {
        gate = undefined;
        open();
      };
    },
  };
}

describe('notify processor on PostgreSQL', () => {
  let database: TestDatabase;
  let store: Store;
  let admin: pg.Client;
  const supervisors: Supervisor[] = [];

  beforeAll(async () => {
    database = await createTestDatabase();
    store = await openPostgresStore(
      { kind: 'postgres', url: database.url, poolSize: 4, statementTimeoutMs: 0 },
      { log: captureLog().log, startupTimeoutMs: 5000 },
    );
    await store.query('CREATE TABLE items (id serial PRIMARY KEY, handled boolean NOT NULL DEFAULT false)');
    admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
  });

  afterEach(async () => {
    await Promise.all(supervisors.splice(0).map((supervisor) => supervisor.stop()));
    await store.query('TRUNCATE items');
  });

  afterAll(async () => {
    await admin?.end();
    await store?.close();
    await database?.drop();
  });

  async function run(channel: string) {
    const logged = captureLog();
    const processor = river(store, channel);
    const supervisor = new Supervisor({
      log: logged.log,
      store,
      assertPrimary: () => Promise.resolve(),
      stopTimeoutMs: 5000,
      backoff: { initialMs: 50, maxMs: 200 },
    });
    supervisors.push(supervisor);
    supervisor.add(processor.component);
    await supervisor.setRole('not-in-group', 0);
    await supervisor.start();
    return { ...processor, supervisor, logged };
  }

  const insert = (count: number) =>
    admin.query('INSERT INTO items (handled) SELECT false FROM generate_series(1, $1)', [count]);
  const unhandled = async () =>
    Number(
      (await admin.query<{ n: string }>('SELECT count(*) AS n FROM items WHERE NOT handled')).rows[0]?.n,
    );

  it('first makes a catch-up call that finds what was written before it started', async () => {
    await insert(5);
    const processor = await run('first');
    await vi.waitFor(() => expect(processor.calls.length).toBeGreaterThan(0), WAIT);
    expect(processor.calls[0]?.notifications).toEqual([]);
    expect(processor.calls[0]?.handled).toHaveLength(5);

    await insert(1);
    await admin.query("SELECT pg_notify('first', 'one more')");
    await vi.waitFor(
      () => expect(processor.calls.some((call) => call.notifications.length > 0)).toBe(true),
      WAIT,
    );
    const hinted = processor.calls.find((call) => call.notifications.length > 0);
    expect(hinted?.notifications).toEqual([{ channel: 'first', payload: 'one more' }]);
    expect(await unhandled()).toBe(0);
  });

  it('coalesces a burst of notifications into few calls, never two at once', async () => {
    const processor = await run('burst');
    await vi.waitFor(() => expect(processor.calls.length).toBeGreaterThan(0), WAIT);
    const open = processor.hold();
    await admin.query("SELECT pg_notify('burst', 'first')");
    const BURST = 200;
    for (let index = 0; index < BURST; index++) await admin.query(`SELECT pg_notify('burst', '${index}')`);
    open();
    await vi.waitFor(() => {
      const delivered = processor.calls.flatMap((call) => call.notifications.map((n) => n.payload));
      expect(delivered).toEqual(['first', ...Array.from({ length: BURST }, (_, index) => String(index))]);
    }, WAIT);
    const withNotifications = processor.calls.filter((call) => call.notifications.length > 0);
    // One call held 'first' while the burst arrived: the rest come in a handful of calls, not 200.
    expect(withNotifications.length).toBeLessThanOrEqual(10);
    expect(processor.overlapped()).toBe(false);
  });

  it('catches up after its LISTEN connection is killed and comes back', async () => {
    const processor = await run('reconnect');
    await vi.waitFor(() => expect(processor.calls.length).toBeGreaterThan(0), WAIT);
    const listenerPid = async (): Promise<number | undefined> => {
      const result = await admin.query<{ pid: number }>(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE '%:listen' AND datname = current_database()",
      );
      return result.rows[0]?.pid;
    };
    const before = await listenerPid();
    expect(before).toBeDefined();
    const catchUps = processor.calls.filter((call) => call.notifications.length === 0).length;

    const killed = await admin.query<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', [before]);
    expect(killed.rows[0]?.ok).toBe(true);
    // Written while nobody listens: this NOTIFY is lost, so only the catch-up can find the rows.
    await insert(3);
    await admin.query("SELECT pg_notify('reconnect', 'lost')");

    await vi.waitFor(async () => {
      expect(await listenerPid()).toBeDefined();
      expect(await listenerPid()).not.toBe(before);
    }, WAIT);
    await vi.waitFor(() => {
      const after = processor.calls.filter((call) => call.notifications.length === 0);
      expect(after.length).toBeGreaterThan(catchUps);
      expect(after.flatMap((call) => call.handled)).toHaveLength(3);
    }, WAIT);
    expect(await unhandled()).toBe(0);
    expect(processor.supervisor.status()[0]?.restarts).toBe(0); // a reconnect is not a failure
  });

  it('stops cleanly: its LISTEN connection closes with the run', async () => {
    const processor = await run('stopping');
    await vi.waitFor(() => expect(processor.calls.length).toBeGreaterThan(0), WAIT);
    await processor.supervisor.setRole('secondary', 1);
    expect(processor.supervisor.status()[0]?.state).toBe('stopped');
    // The client has hung up; the server's backend process exits a moment later.
    await vi.waitFor(async () => {
      const left = await admin.query(
        "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE '%:listen' AND datname = current_database()",
      );
      expect(left.rowCount).toBe(0);
    }, WAIT);
  });
});

describe('notify processor on embedded PGlite', () => {
  let temp: TempStore;
  beforeAll(async () => {
    temp = await openTempStore();
  });
  afterAll(async () => {
    await temp?.dispose();
  });

  it('polls with catch-up calls, and says so at start', async () => {
    const logged = captureLog();
    const calls: Array<readonly Notification[]> = [];
    const supervisor = new Supervisor({
      log: logged.log,
      store: temp.store,
      assertPrimary: () => Promise.resolve(),
      stopTimeoutMs: 2000,
    });
    supervisor.add(
      createNotifyProcessor({
        name: 'poller',
        channels: ['jobs'],
        pollIntervalMs: 20,
        process: (_ctx, notifications) => {
          calls.push(notifications);
          return Promise.resolve();
        },
      }),
    );
    await supervisor.setRole('not-in-group', 0);
    await supervisor.start();
    await vi.waitFor(() => expect(calls.length).toBeGreaterThanOrEqual(3), WAIT);
    expect(calls.every((notifications) => notifications.length === 0)).toBe(true);
    expect(logged.lines.some((line) => line.msg.includes('polling every 20 ms'))).toBe(true);
    await supervisor.stop();
    const stoppedAt = calls.length;
    await new Promise((resolve) => setTimeout(resolve, 60)); // a stopped poller must stay quiet
    expect(calls.length).toBe(stoppedAt);
  });

  it('refuses a definition without channels, naming it', () => {
    expect(() =>
      createNotifyProcessor({ name: 'empty', channels: [], process: () => Promise.resolve() }),
    ).toThrow(new InvalidComponentError('empty', 'channels must be a non-empty list of channel names'));
  });
});
