// Stopping a node in the middle of a batch loses and doubles nothing. SIGTERM lets the in-flight batch
// commit and exits 0; SIGKILL loses the batch's uncommitted work, and the next start recovers its claim.
// Either way, after a restart every record is stored exactly once: the fixture handler stores each record's
// id under a primary key, so a second delivery of a committed record would fail and show up in the log.
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it, vi } from 'vitest';

import type { BatonNodeProcess, TempProject } from '../support/process.js';
import {
  cleanupAll,
  freePort,
  runBaton,
  sqlOverHttp,
  startBatonNode,
  tempProject,
  within,
} from '../support/process.js';

afterEach(cleanupAll);

const SLOW_HANDLER = fileURLToPath(new URL('../fixtures/slow-handler.ts', import.meta.url));
const TOTAL = 1000;
const BATCH = 50;
const SHUTDOWN_TIMEOUT_MS = 15_000;

async function slowProject(maxAttempts: number): Promise<TempProject> {
  return tempProject({
    toml: {
      node: { name: 'sigterm-test', data_dir: 'data', shutdown_timeout_ms: SHUTDOWN_TIMEOUT_MS },
      // The fixture logs each record at debug level: the test reads that to find the middle of a batch.
      log: { level: 'debug' },
      http: { port: await freePort() },
      queues: {
        q: {
          handler: SLOW_HANDLER,
          batch_size: BATCH,
          inline: false,
          max_attempts: maxAttempts,
          retry_delay_ms: 50,
        },
      },
    },
  });
}

/** `{"id": 1}` … `{"id": n}`, one per line. */
function records(n: number): string {
  return Array.from({ length: n }, (_, index) => `${JSON.stringify({ id: index + 1 })}\n`).join('');
}

/** The id of the last record the node's handler logged (inserted in its open transaction), or 0. */
function lastLoggedItem(stderr: string): number {
  const end = stderr.lastIndexOf('"stored item"');
  if (end === -1) return 0;
  const line = stderr.slice(stderr.lastIndexOf('\n', end) + 1, stderr.indexOf('\n', end));
  const entry = JSON.parse(line) as { item?: unknown };
  return typeof entry.item === 'number' ? entry.item : 0;
}

/**
 * Waits until the handler is about halfway through a batch after the first two, so that a signal sent now
 * lands well inside a batch (records are claimed in id order: batch k holds ids 50k+1 … 50k+50). Returns
 * the id of the record it was at.
 */
async function waitMidBatch(node: BatonNodeProcess): Promise<number> {
  return vi.waitFor(
    () => {
      const last = lastLoggedItem(node.stderr);
      const position = (last - 1) % BATCH;
      if (last <= 2 * BATCH || position < 10 || position > 35) {
        throw new Error(`not in the middle of a batch yet (last stored item: ${last})`);
      }
      return last;
    },
    { timeout: 30_000, interval: 10 },
  );
}

const STATE = `select
  (select count(*) from items)::int as stored,
  (select count(distinct id) from items)::int as distinct_ids,
  (select min(id) from items) as min_id,
  (select max(id) from items) as max_id,
  (select count(*) from baton_queue_records where queue = 'q' and claimed_by is null)::int as waiting,
  (select count(*) from baton_queue_records where queue = 'q' and claimed_by is not null)::int as claimed,
  (select count(*) from baton_queue_errors where queue = 'q')::int as errors`;

interface State {
  stored: number;
  distinct_ids: number;
  min_id: number | null;
  max_id: number | null;
  waiting: number;
  claimed: number;
  errors: number;
}

/** The store's state through `baton sql` (locally when no node runs, else through the node). */
async function state(project: TempProject): Promise<State> {
  const result = await runBaton(['-c', project.configPath, 'sql', '--json', STATE]);
  // The project logs at debug level, which commands follow too: nothing above it.
  const above = result.stderr.split('\n').filter((line) => line !== '' && !line.includes('"level":20,'));
  expect(above).toEqual([]);
  expect(result.code).toBe(0);
  const { rows } = JSON.parse(result.stdout) as { rows: State[] };
  return rows[0] as State;
}

async function storedCount(node: BatonNodeProcess): Promise<number> {
  const [row] = await sqlOverHttp(node.url, 'select count(*)::int as n from items');
  return Number(row?.['n']);
}

/** Signs that a record ran more than once after it was committed, or failed for another reason. */
function expectNoHandlerFailure(stderr: string): void {
  expect(stderr).not.toContain('failed on the record');
  expect(stderr).not.toContain('duplicate key');
  expect(stderr).not.toContain('moved to the error queue');
}

/** Restarts the node on the same data and waits until it has stored every record. */
async function restartAndFinish(project: TempProject): Promise<BatonNodeProcess> {
  const node = await startBatonNode(project.configPath);
  await vi.waitFor(async () => expect(await storedCount(node)).toBe(TOTAL), {
    timeout: 40_000,
    interval: 250,
  });
  return node;
}

async function expectEverythingStoredOnce(project: TempProject): Promise<void> {
  expect(await state(project)).toEqual({
    stored: TOTAL,
    distinct_ids: TOTAL,
    min_id: 1,
    max_id: TOTAL,
    waiting: 0,
    claimed: 0,
    errors: 0,
  });
}

describe('stopping a node in the middle of a batch', () => {
  it('SIGTERM finishes the in-flight batch, exits 0, and the restart stores the rest exactly once', async () => {
    const project = await slowProject(5);
    const published = await runBaton(['-c', project.configPath, 'publish', 'q', '-'], {
      input: records(TOTAL),
    });
    expect(published.code).toBe(0);
    expect(published.stdout).toContain(`accepted ${TOTAL} records`);

    const first = await startBatonNode(project.configPath);
    const at = await waitMidBatch(first);
    const signalled = Date.now();
    const exit = await within(first.stop('SIGTERM'), SHUTDOWN_TIMEOUT_MS, 'baton run after SIGTERM');
    expect(Date.now() - signalled).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    expect(exit.signal).toBeNull();
    expect(exit.code).toBe(0);
    expect(exit.stderr).toContain('SIGTERM: stopping');
    expect(exit.stderr).not.toContain('aborting them');
    expectNoHandlerFailure(exit.stderr);

    // Whole batches only, the interrupted one included; nothing left claimed.
    const stopped = await state(project);
    const inFlightBatchEnd = Math.ceil(at / BATCH) * BATCH;
    expect(stopped.stored % BATCH).toBe(0);
    expect(stopped.stored).toBeGreaterThanOrEqual(inFlightBatchEnd);
    expect(stopped.stored).toBeLessThan(TOTAL);
    expect(stopped).toMatchObject({ distinct_ids: stopped.stored, claimed: 0, errors: 0 });
    expect(stopped.waiting).toBe(TOTAL - stopped.stored);

    const second = await restartAndFinish(project);
    await expectEverythingStoredOnce(project);
    const secondExit = await within(second.stop('SIGTERM'), SHUTDOWN_TIMEOUT_MS, 'baton run after SIGTERM');
    expect(secondExit.code).toBe(0);
    // The graceful stop left no claim behind to recover.
    expect(secondExit.stderr).not.toMatch(/recovered \d+ claimed records/);
    expectNoHandlerFailure(secondExit.stderr);
  }, 180_000);

  it('SIGKILL loses the uncommitted batch, and the restart recovers its claim: every record stored once', async () => {
    // The claim recovery counts an attempt: leave enough that the killed batch does not go to errors-q.
    const project = await slowProject(10);
    const first = await startBatonNode(project.configPath);
    const ingest = await fetch(`${first.url}/v1/queues/q/records`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' },
      body: records(TOTAL),
    });
    expect(ingest.status).toBe(202);
    expect(await ingest.json()).toEqual({ accepted: TOTAL });

    await waitMidBatch(first);
    const exit = await within(first.stop('SIGKILL'), 10_000, 'baton run after SIGKILL');
    expect(exit.signal).toBe('SIGKILL');
    expectNoHandlerFailure(exit.stderr);

    const second = await restartAndFinish(project);
    expect(second.stderr).toMatch(/recovered \d+ claimed records/);
    await expectEverythingStoredOnce(project);
    const secondExit = await within(second.stop('SIGTERM'), SHUTDOWN_TIMEOUT_MS, 'baton run after SIGTERM');
    expect(secondExit.code).toBe(0);
    expectNoHandlerFailure(secondExit.stderr);
  }, 180_000);
});
