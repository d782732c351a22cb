// key_concurrency and key_rate_limit across two nodes, on a store queue and on a Redis queue. With
// key_concurrency = 2, runs of one key overlap, but never more than two at a time, though eight consumers
// claim; with key_rate_limit = 5, each key runs no faster than five records a second (after one second's
// burst) while the keys run side by side. Every record runs once.
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { NodeGroup } from '../support/node-group.js';
import { startNodeGroup } from '../support/node-group.js';
import type { TimedRun } from '../support/runs.js';
import { mostAtOnce } from '../support/runs.js';
import { waitFor } from '../tasks/support.js';

const HANDLER = fileURLToPath(new URL('../fixtures/key-limits-handler.ts', import.meta.url));
const KEYS = ['alpha', 'beta', 'gamma'];
const KEY_CONCURRENCY = 2;
const KEY_RATE = 5;

interface Run extends TimedRun {
  key: string;
  record: string;
}

describe('key limits on two nodes', () => {
  let group: NodeGroup;

  beforeAll(async () => {
    const shared = {
      handler: HANDLER,
      ordering: 'key' as const,
      key_concurrency: KEY_CONCURRENCY,
      batch_size: 2,
    };
    const throttled = {
      handler: HANDLER,
      ordering: 'key' as const,
      key_rate_limit: KEY_RATE,
      batch_size: 10,
    };
    group = await startNodeGroup(['limits-a', 'limits-b'], (list) => ({
      shared: { ...shared, concurrency: 4 },
      shared_redis: { ...shared, concurrency: 4, backend: 'redis', key: list() },
      throttled: { ...throttled, concurrency: 2 },
      throttled_redis: { ...throttled, concurrency: 2, backend: 'redis', key: list() },
    }));
  }, 120_000);

  afterAll(async () => {
    await group?.close();
  });

  /** Publishes `perKey` records of each key (`<key>-<n>`), key after key, from the first node. */
  async function publishKeys(queue: string, perKey: number): Promise<void> {
    for (const key of KEYS) {
      const records = Array.from({ length: perKey }, (_, index) => Buffer.from(`${key}-${index}`));
      await group.nodes[0]?.publish(queue, records, { key });
    }
  }

  /** The runs of `queue` once all `count` records have run (each once), by start time. */
  async function runsOf(queue: string, count: number): Promise<Run[]> {
    let runs: Run[] = [];
    await waitFor(
      async () => {
        const { rows } = await group.client.query<{
          key: string;
          record: string;
          started: number;
          ended: number;
        }>(
          `SELECT key, record, extract(epoch FROM started_at) * 1000 AS started,
                  extract(epoch FROM ended_at) * 1000 AS ended
           FROM key_runs WHERE queue = $1 ORDER BY started_at`,
          [queue],
        );
        runs = rows.map((row) => ({ ...row, started: Number(row.started), ended: Number(row.ended) }));
        return runs.length >= count;
      },
      120_000,
      `the ${count} records of ${queue} run`,
    );
    expect(runs.length).toBe(count);
    expect(new Set(runs.map((run) => run.record)).size).toBe(count);
    return runs;
  }

  it.each(['shared', 'shared_redis'])(
    '%s: runs of one key overlap, never more than key_concurrency at once',
    async (queue) => {
      const perKey = 24;
      await publishKeys(queue, perKey);
      const runs = await runsOf(queue, perKey * KEYS.length);
      const most = KEYS.map((key) => mostAtOnce(runs.filter((run) => run.key === key)));
      for (const atOnce of most) expect(atOnce).toBeLessThanOrEqual(KEY_CONCURRENCY);
      // Eight consumers and batches of two: keys did run side by side, or the limit was never tested.
      expect(Math.max(...most)).toBe(KEY_CONCURRENCY);
    },
    180_000,
  );

  it.each(['throttled', 'throttled_redis'])(
    '%s: each key runs no faster than key_rate_limit, the keys side by side',
    async (queue) => {
      const perKey = 20;
      const publishedMs = await group.databaseNow();
      await publishKeys(queue, perKey);
      const runs = await runsOf(queue, perKey * KEYS.length);
      for (const key of KEYS) {
        const ofKey = runs.filter((run) => run.key === key);
        // A second's burst, then KEY_RATE a second: record n of a key was granted no sooner than
        // (n + 1 - KEY_RATE) / KEY_RATE s after the publish (less one step of rounding).
        ofKey.forEach((run, index) => {
          const earliest = ((index + 1 - KEY_RATE) / KEY_RATE) * 1000 - 1000 / KEY_RATE;
          expect(run.started - publishedMs, `${run.record}`).toBeGreaterThanOrEqual(earliest);
        });
      }
      // The limit is per key: the keys went on side by side, not one after the other.
      const lastOfFirstKey = Math.max(...runs.filter((run) => run.key === KEYS[0]).map((run) => run.started));
      const firstOfLastKey = Math.min(
        ...runs.filter((run) => run.key === KEYS.at(-1)).map((run) => run.started),
      );
      expect(firstOfLastKey).toBeLessThan(lastOfFirstKey);
    },
    180_000,
  );
});
