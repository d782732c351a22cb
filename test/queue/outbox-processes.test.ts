// Baton's outbox across a node killed with SIGKILL. The application (this test, with a node-postgres client on
// the store's database) enqueues records and sends an event in its own transactions while a node process
// consumes the queue and runs a task on the event:
// - transaction A rolls back: none of its records is ever processed, its event never exists;
// - transaction B enqueues and sends, the node is killed (its pid gone), then B commits while no node runs; a
//   new node processes every record of B exactly once, and its rule runs the task once for B's event;
// - round two: a transaction commits while the node runs, whose handler is slowed down, and the node is
//   killed while it is half-way through the records; after a restart every record is processed exactly once.
// The sink `seen` has no unique constraint on purpose: a record processed twice would show as a second row
// (a unique key would turn it into a failed attempt and hide it), so "exactly once" is one row per id.
import { fileURLToPath } from 'node:url';

import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';

import { enqueue, sendEvent } from '../../src/index.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { BatonNodeProcess, TempProject } from '../support/process.js';
import { cleanupAll, freePort, startBatonNode, tempProject } from '../support/process.js';
import { lines, tomlString, waitFor } from '../tasks/support.js';

const HANDLER = fileURLToPath(new URL('../fixtures/ids-handler.ts', import.meta.url));
const RECORDS = 100;
const NAMESPACE = 'orders';

let database: TestDatabase | undefined;
let app: pg.Client | undefined;
afterEach(async () => {
  // Whatever happened, the node processes (with their process groups) go first.
  await cleanupAll();
  await app?.end().catch(() => undefined);
  app = undefined;
  await database?.drop();
  database = undefined;
});

const ids = (from: number): number[] => Array.from({ length: RECORDS }, (_, index) => from + index);
const records = (list: readonly number[]): string[] => list.map((id) => JSON.stringify({ id }));

async function project(url: string): Promise<TempProject> {
  const shipped = '$BATON_TASK_RUN';
  const made = await tempProject({
    toml:
      `[node]\nname = "outbox-kill"\ndata_dir = "data"\nshutdown_timeout_ms = 3000\n[log]\nlevel = "warn"\n` +
      `[http]\nport = ${await freePort()}\n[store]\nurl = "${url}"\npool_size = 4\n` +
      // Small batches, one at a time: round two can kill the node between two of them.
      `[queues.ids]\nhandler = ${tomlString(HANDLER)}\nbatch_size = 5\nconcurrency = 1\n` +
      `[tasks.ship]\nnamespace = "${NAMESPACE}"\n` +
      `command = ${tomlString(`echo "shipped ${shipped}" >> shipped.txt`)}\n` +
      `[[rules]]\non = { namespace = "${NAMESPACE}", key = "order.placed" }\naction = "start"\ntask = "ship"\n`,
  });
  return made;
}

/** SIGKILLs the node and resolves once its pid no longer exists. */
async function kill(node: BatonNodeProcess): Promise<void> {
  const result = await node.stop('SIGKILL');
  expect(result.signal).toBe('SIGKILL');
  expect(() => process.kill(node.pid, 0)).toThrow(/ESRCH/);
}

describe('the outbox with the node killed in between', () => {
  it('a rollback leaves nothing; a commit while the node is dead, or while it processes, is applied exactly once', async () => {
    const db = await createTestDatabase();
    database = db;
    const client = new pg.Client({ connectionString: db.url });
    app = client;
    const made = await project(db.url);
    const configPath = made.configPath;
    let node = await startBatonNode(configPath);
    await client.connect();

    const count = async (statement: string, params: unknown[] = []): Promise<number> => {
      const { rows } = await client.query<{ n: number }>(statement, params);
      return rows[0]?.n ?? -1;
    };
    /** Rows of `seen` for `list`, and how many ids appear other than once. */
    const sink = async (list: readonly number[]): Promise<{ rows: number; notOnce: number }> => {
      const { rows } = await client.query<{ rows: number; not_once: number }>(
        `SELECT coalesce(sum(n), 0)::int AS rows, count(*) FILTER (WHERE n <> 1)::int AS not_once
         FROM (SELECT id, count(*) AS n FROM seen WHERE id = ANY($1::int[]) GROUP BY id) AS per_id`,
        [list],
      );
      return { rows: rows[0]?.rows ?? -1, notOnce: rows[0]?.not_once ?? -1 };
    };
    const processedOnce = (list: readonly number[], what: string) =>
      waitFor(
        async () => {
          const now = await sink(list);
          return now.rows === list.length || now.notOnce > 0 ? now : undefined;
        },
        90_000,
        what,
      );
    // The rule engine's offset exists before anything is sent: it will resume after it.
    await waitFor(
      async () => (await count('SELECT count(*)::int AS n FROM baton.baton_event_listeners')) > 0,
      30_000,
      "the rule engine's stored offset",
    );

    // A: rolled back.
    const rolledBack = ids(1_000);
    await client.query('BEGIN');
    await enqueue(client, 'ids', records(rolledBack));
    await sendEvent(client, { namespace: NAMESPACE, key: 'order.placed', value: 'A' });
    await client.query('ROLLBACK');

    // B: begun and written while the node runs, committed after it was killed.
    const committed = ids(2_000);
    await client.query('BEGIN');
    expect(await enqueue(client, 'ids', records(committed))).toBe(RECORDS);
    const eventB = await sendEvent(client, { namespace: NAMESPACE, key: 'order.placed', value: 'B' });
    await kill(node);
    await client.query('COMMIT');
    expect(await count(`SELECT count(*)::int AS n FROM baton.baton_queue_records WHERE queue = 'ids'`)).toBe(
      RECORDS,
    );

    node = await startBatonNode(configPath);
    expect(await processedOnce(committed, "B's records processed")).toEqual({ rows: RECORDS, notOnce: 0 });
    // The task ran once for B's event, and only for it.
    const runsOf = (offset: number) =>
      count(
        `SELECT count(*)::int AS n FROM baton.baton_task_runs WHERE trigger_offset = $1 AND state = 'succeeded'`,
        [offset],
      );
    await waitFor(async () => (await runsOf(eventB.offset)) > 0, 60_000, "the task run of B's event");
    expect(await count('SELECT count(*)::int AS n FROM baton.baton_task_runs')).toBe(1);
    expect(await lines(made.path('shipped.txt'))).toHaveLength(1);
    const events = await client.query<{ offset: string; value: string; sender: string }>(
      `SELECT "offset", value, sender FROM baton.baton_events WHERE key = 'order.placed' ORDER BY "offset"`,
    );
    expect(events.rows).toEqual([{ offset: String(eventB.offset), value: 'B', sender: 'outbox' }]);

    // Round two: committed while the node runs; the node is killed half-way through the records.
    await kill(node);
    node = await startBatonNode(configPath, { env: { IDS_BATCH_DELAY_MS: '250' } });
    const halfWay = ids(3_000);
    await client.query('BEGIN');
    await enqueue(client, 'ids', records(halfWay));
    const eventC = await sendEvent(client, { namespace: NAMESPACE, key: 'order.placed', value: 'C' });
    await client.query('COMMIT');
    // Killed while it holds a claimed batch (its handler sleeps), with some batches committed before it.
    const claimed = () =>
      count(`SELECT count(*)::int AS n FROM baton.baton_queue_records WHERE claimed_by IS NOT NULL`);
    await waitFor(
      async () => (await sink(halfWay)).rows >= 10 && (await claimed()) > 0,
      60_000,
      'some of the records processed, a batch in the handler',
    );
    await kill(node);
    const beforeKill = await sink(halfWay);
    expect(beforeKill.rows).toBeGreaterThanOrEqual(10);
    expect(beforeKill.rows).toBeLessThan(RECORDS);
    expect(await claimed()).toBeGreaterThan(0);

    node = await startBatonNode(configPath);
    expect(await processedOnce(halfWay, 'the rest of the records processed')).toEqual({
      rows: RECORDS,
      notOnce: 0,
    });
    await waitFor(async () => (await runsOf(eventC.offset)) > 0, 60_000, "the task run of C's event");
    expect(
      await count('SELECT count(*)::int AS n FROM baton.baton_task_runs WHERE trigger_offset = $1', [
        eventC.offset,
      ]),
    ).toBe(1);

    // Nothing of A, ever; nothing left in the queue or its error queue.
    await waitFor(
      async () => (await count('SELECT count(*)::int AS n FROM baton.baton_queue_records')) === 0,
      60_000,
      'the queue empty',
    );
    expect((await sink(rolledBack)).rows).toBe(0);
    expect(await count('SELECT count(*)::int AS n FROM seen')).toBe(2 * RECORDS);
    expect(await count('SELECT count(*)::int AS n FROM baton.baton_queue_errors')).toBe(0);
    expect(await count(`SELECT count(*)::int AS n FROM baton.baton_events WHERE key = 'order.placed'`)).toBe(
      2,
    );
  }, 300_000);
});
