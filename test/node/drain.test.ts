// A node's stop drains its queues: a batch in flight that ends within shutdown_timeout_ms commits, and the
// node stops without waiting longer; one that would take longer is aborted at the deadline, and its records
// go back to the queue with no attempt counted, so that the next node runs them as if for the first time.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { captureLog } from '../components/support.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';

const handler = fileURLToPath(new URL('../fixtures/timed-handler.ts', import.meta.url));
let database: TestDatabase;
let dir: string;

beforeAll(async () => {
  database = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'baton-drain-'));
});
afterAll(async () => {
  await database.drop();
  await rm(dir, { recursive: true, force: true });
});

/** A node not in a group with one queue, `queue`; run_on = "primary", which the drain covers too. */
async function start(queue: string, shutdownTimeoutMs: number) {
  const logged = captureLog();
  const node = await startNode(
    {
      node: { name: queue, data_dir: join(dir, queue), shutdown_timeout_ms: shutdownTimeoutMs },
      http: { enabled: false },
      store: { url: database.url, pool_size: 3 },
      queues: { [queue]: { handler, batch_size: 10, run_on: 'primary', max_attempts: 3 } },
    },
    { log: logged.log },
  );
  return { node, ...logged };
}

/** Publishes records {id, ms} and waits until the node has claimed them all (its batch is in flight). */
async function inFlight(node: BatonNode, queue: string, ids: readonly number[], ms: number): Promise<void> {
  await node.publish(
    queue,
    ids.map((id) => Buffer.from(JSON.stringify({ id, ms }))),
  );
  await vi.waitFor(async () => expect((await node.admin.queues())[0]?.inFlight).toBe(ids.length), {
    timeout: 10_000,
    interval: 10,
  });
}

async function query(text: string, params: unknown[] = []): Promise<Array<Record<string, unknown>>> {
  const client = new pg.Client({ connectionString: database.url });
  await client.connect();
  try {
    return (await client.query(text, params)).rows as Array<Record<string, unknown>>;
  } finally {
    await client.end();
  }
}

const DEADLINE_LINE = /in-flight batches still running after shutdown_timeout_ms \(\d+ ms\): aborting them/;

describe('a stopping node drains its in-flight batches', () => {
  it('lets a batch that ends within shutdown_timeout_ms commit, and stops as soon as it did', async () => {
    const { node, lines } = await start('finishes', 10_000);
    await inFlight(node, 'finishes', [1, 2, 3, 4, 5], 600);
    const before = Date.now();
    await node.stop();
    const took = Date.now() - before;
    expect(took).toBeLessThan(5_000);
    expect(node.state).toBe('stopped');
    expect(await query('SELECT id FROM timed WHERE id <= 5 ORDER BY id')).toEqual(
      [1, 2, 3, 4, 5].map((id) => ({ id })),
    );
    expect(
      await query("SELECT count(*)::int AS n FROM baton.baton_queue_records WHERE queue = 'finishes'"),
    ).toEqual([{ n: 0 }]);
    expect(lines.some((line) => DEADLINE_LINE.test(line.msg))).toBe(false);
    expect(lines.some((line) => line.msg === 'component baton.queue.finishes: draining')).toBe(true);
  }, 30_000);

  it('aborts a batch longer than shutdown_timeout_ms at the deadline and gives its records back uncounted', async () => {
    const { node, lines } = await start('aborted', 500);
    await inFlight(node, 'aborted', [101, 102, 103], 30_000);
    const before = Date.now();
    await node.stop();
    const took = Date.now() - before;
    expect(took).toBeGreaterThanOrEqual(450);
    expect(took).toBeLessThan(5_000);
    const warned = lines.filter((line) => DEADLINE_LINE.test(line.msg));
    expect(warned.map((line) => line.msg)).toEqual([
      'in-flight batches still running after shutdown_timeout_ms (500 ms): aborting them',
    ]);
    expect(warned[0]?.['components']).toEqual(['baton.queue.aborted']);
    // Nothing of the batch committed; its records wait again, unclaimed, with no attempt counted.
    expect(await query('SELECT count(*)::int AS n FROM timed WHERE id > 100')).toEqual([{ n: 0 }]);
    expect(
      await query(
        "SELECT attempts, claimed_by, last_error FROM baton.baton_queue_records WHERE queue = 'aborted' ORDER BY id",
      ),
    ).toEqual([101, 102, 103].map(() => ({ attempts: 0, claimed_by: null, last_error: null })));
    expect(
      await query("SELECT count(*)::int AS n FROM baton.baton_queue_errors WHERE queue = 'aborted'"),
    ).toEqual([{ n: 0 }]);
  }, 30_000);
});
