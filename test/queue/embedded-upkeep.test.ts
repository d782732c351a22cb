// A node alone on its embedded store keeps its queue table up after its start: once a drained backlog left
// more dead rows than live ones, the upkeep's VACUUM runs (before, its claim recovery, which runs the upkeep,
// stopped after the first round on an embedded store, and drained backlogs stayed in the index that claims
// and inline ingest walk).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';

const handler = fileURLToPath(new URL('../fixtures/noop-handler.ts', import.meta.url));
const RECORDS = 60_000;

describe('embedded store: queue upkeep while the node runs', () => {
  let dir: string;
  let node: BatonNode;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'baton-upkeep-'));
    node = await startNode(
      {
        node: { name: 'upkeep', data_dir: join(dir, 'node') },
        http: { enabled: false },
        queues: { work: { handler, batch_size: 500 } },
      },
      { log: createLogger({ level: 'silent' }) },
    );
  }, 120_000);

  afterAll(async () => {
    await node?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function tableStats(): Promise<{ vacuums: number; dead: number }> {
    const { rows } = await node.admin.sql(
      `SELECT vacuum_count AS vacuums, n_dead_tup AS dead FROM pg_stat_user_tables
       WHERE relid = to_regclass('baton_queue_records')`,
    );
    return { vacuums: Number(rows[0]?.['vacuums']), dead: Number(rows[0]?.['dead']) };
  }

  it('vacuums the records table after a drained backlog, long after the node started', async () => {
    const before = await tableStats();
    await node.admin.sql(
      `INSERT INTO baton_queue_records (queue, payload) SELECT 'work', '\\x7b7d'::bytea FROM generate_series(1, ${RECORDS})`,
    );
    await vi.waitFor(
      async () => {
        const [queue] = await node.admin.queues();
        expect((queue?.depth ?? 1) + (queue?.inFlight ?? 1)).toBe(0);
      },
      { timeout: 180_000, interval: 200 },
    );
    // The upkeep runs at most every 10 s per queue: a generous wait for the round after the drain.
    await vi.waitFor(async () => expect((await tableStats()).vacuums).toBeGreaterThan(before.vacuums), {
      timeout: 120_000,
      interval: 500,
    });
    expect((await tableStats()).dead).toBeLessThan(RECORDS);
  }, 360_000);
});
