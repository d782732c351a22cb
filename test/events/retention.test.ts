// Retention: a primary-only component that deletes events and ended task runs past retention_days, each
// delete in a transaction that checks the fence. A primary deletes; a deposed primary that has not noticed
// yet (the fence was raised past its term) deletes nothing; a secondary does not run it at all.
import { sql } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { assertFence, raiseFence } from '../../src/cluster/fence.js';
import { Supervisor } from '../../src/components/supervisor.js';
import { EventLog } from '../../src/events/log.js';
import { Retention } from '../../src/events/retention.js';
import { pruneTaskRuns } from '../../src/tasks/runs.js';
import { captureLog } from '../components/support.js';
import type { TempStore } from '../support/pglite.js';
import { openTempStore } from '../support/pglite.js';

const DAY_MS = 86_400_000;
const WAIT = { timeout: 10_000, interval: 20 };
let temp: TempStore;
let events: EventLog;
let supervisor: Supervisor;
let lines: ReturnType<typeof captureLog>['lines'];

beforeEach(async () => {
  temp = await openTempStore();
  const logged = captureLog();
  lines = logged.lines;
  events = new EventLog(temp.store, logged.log);
  await events.start();
  await raiseFence(temp.store, 'g', 1);
  supervisor = new Supervisor({
    log: logged.log,
    store: temp.store,
    assertPrimary: (tx, term) => assertFence(tx, 'g', term),
    stopTimeoutMs: 1_000,
  });
  supervisor.add(
    new Retention({
      retentionMs: 7 * DAY_MS,
      intervalMs: 50,
      batchSize: 2,
      targets: [
        { what: 'events', prune: (tx, ms, limit) => events.pruneIn(tx, ms, limit) },
        { what: 'task runs', prune: pruneTaskRuns },
      ],
    }),
  );
  await supervisor.start();
});

afterEach(async () => {
  await supervisor.stop();
  await events.close();
  await temp.dispose();
});

/** Appends events `keys`, dated `ageDays` ago. */
async function eventsAged(keys: readonly string[], ageDays: number): Promise<void> {
  const appended = await events.append(keys.map((key) => ({ key, value: '1' })));
  await temp.store.execute(sql`
    UPDATE baton_events SET create_time = now() - make_interval(days => ${ageDays})
    WHERE "offset" = ANY(${sql.param(appended.map((event) => event.offset))}::bigint[])`);
}

/** A task run in `state`, ended `endedDaysAgo` days ago (null: not ended), each for an event of its own. */
async function taskRun(id: string, state: string, endedDaysAgo: number | null): Promise<void> {
  await temp.store.execute(sql`
    INSERT INTO baton_task_runs (id, task, rule, trigger_offset, trigger_key, namespace, state, ended_at)
    VALUES (${id}, 'build', 0, (SELECT count(*) FROM baton_task_runs), 'go', 'default', ${state},
            ${endedDaysAgo === null ? null : sql`now() - make_interval(days => ${endedDaysAgo})`})`);
}

async function keys(): Promise<string[]> {
  const rows = await temp.store.execute(sql`SELECT key FROM baton_events ORDER BY "offset"`);
  return rows.map((row) => String(row['key']));
}

async function runIds(): Promise<string[]> {
  const rows = await temp.store.execute(sql`SELECT id FROM baton_task_runs ORDER BY id`);
  return rows.map((row) => String(row['id']));
}

describe('retention', () => {
  it('on the primary, deletes the events and the ended task runs past retention_days, and keeps the rest', async () => {
    await eventsAged(['old-1', 'old-2'], 10);
    await eventsAged(['recent'], 1);
    await taskRun('a-old-ended', 'succeeded', 10);
    await taskRun('b-recent-ended', 'failed', 1);
    await taskRun('c-running', 'running', null);

    await supervisor.setRole('secondary', 1);
    expect(supervisor.status()[0]).toMatchObject({ name: 'baton.retention', state: 'stopped' });
    expect(await keys()).toEqual(['old-1', 'old-2', 'recent']); // a secondary runs no retention

    await supervisor.setRole('primary', 1);
    await vi.waitFor(async () => expect(await keys()).toEqual(['recent']), WAIT);
    await vi.waitFor(async () => expect(await runIds()).toEqual(['b-recent-ended', 'c-running']), WAIT);
    expect(lines.some((line) => line.msg === 'deleted 2 events past their retention')).toBe(true);
    expect(lines.some((line) => line.msg === 'deleted 1 task runs past their retention')).toBe(true);
  });

  it('of a deposed primary deletes nothing: its transaction fails the fence check', async () => {
    await supervisor.setRole('primary', 1);
    await vi.waitFor(
      () => expect(supervisor.status()[0]).toMatchObject({ name: 'baton.retention', state: 'running' }),
      WAIT,
    );
    // Another node became primary (term 2) while this one still believes it acts for term 1.
    await raiseFence(temp.store, 'g', 2);
    const before = lines.length;
    await eventsAged(['old'], 10);
    await taskRun('old-ended', 'stopped', 10);

    await vi.waitFor(() => {
      const fenced = lines.slice(before).filter((line) => line['fenced'] === true);
      expect(fenced.map((line) => line.msg)).toEqual(
        expect.arrayContaining([
          "did not delete events past their retention: this node's term is over",
          "did not delete task runs past their retention: this node's term is over",
        ]),
      );
      expect(String(fenced[0]?.['err'])).toContain('FencedError');
    }, WAIT);
    expect(await keys()).toEqual(['old']);
    expect(await runIds()).toEqual(['old-ended']);
  });

  it('deletes in batches, the oldest first, and tells each round’s total once', async () => {
    await eventsAged(['old-1', 'old-2', 'old-3'], 12);
    await eventsAged(['old-4', 'old-5'], 10);
    await eventsAged(['recent'], 1);
    expect(await temp.store.transaction((tx) => events.pruneIn(tx, 11 * DAY_MS, 2))).toBe(2);
    expect(await keys()).toEqual(['old-3', 'old-4', 'old-5', 'recent']);

    await supervisor.setRole('primary', 1);
    await vi.waitFor(async () => expect(await keys()).toEqual(['recent']), WAIT);
    // Batches of 2, 1: one line for the round.
    await vi.waitFor(
      () => expect(lines.filter((line) => String(line.msg).startsWith('deleted 3 events'))).toHaveLength(1),
      WAIT,
    );
  });
});
