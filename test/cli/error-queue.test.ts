// What the CLI, the node's log and the error queue say about a record whose handler failed, on the embedded
// store and on a PostgreSQL server: a statement PostgreSQL refused gives PostgreSQL's reason, not only
// drizzle's "Failed query: … params: …".
import { join } from 'node:path';

import { afterEach, describe, expect, it, vi } from 'vitest';

import { dropTrackedDatabases, storeToml } from '../support/postgres.js';
import type { RunOptions } from '../support/process.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

const REASON = 'null value in column "timestamp" of relation "pings" violates not-null constraint';
const CREATE_PINGS =
  'CREATE TABLE pings (id serial PRIMARY KEY, name text NOT NULL, "timestamp" timestamptz NOT NULL);\n';
const WAIT = { timeout: 20_000, interval: 200 };

interface ErrorsJson {
  errors: Array<{ id: string; attempts: number; error: string }>;
}

afterEach(async () => {
  await cleanupAll();
  await dropTrackedDatabases();
});

/** A project with the queue `pings` (one attempt per record), its migrations in ./migrations/pings. */
async function project(store: 'embedded' | 'postgres', files: Record<string, string> = {}) {
  const toml =
    `[node]\ndata_dir = "data"\n[http]\nport = ${await freePort()}\n${await storeToml(store)}` +
    `[queues.pings]\nhandler = "${join(FIXTURES_DIR, 'pings-handler.ts')}"\nmax_attempts = 1\n` +
    'migrations = "./migrations/pings"\n';
  const created = await tempProject({ toml, files });
  const baton = (args: readonly string[], options: RunOptions = {}) =>
    runBaton(['-c', created.configPath, ...args], { cwd: created.dir, ...options });
  return { ...created, baton };
}

describe.each(['embedded', 'postgres'] as const)('a failed record on the %s store', (store) => {
  it("holds PostgreSQL's reason in the error queue and the log, which names it by its error queue id", async () => {
    const p = await project(store);
    // Queued before the node runs, so that the node's queue runner processes them. The bad one is the
    // queue's record 2 and becomes record 1 of errors-pings.
    const input = '{"name":"on time","timestamp":"2024-05-01T12:00:00Z"}\n{"name":"no time"}\n';
    expect((await p.baton(['publish', 'pings', '-'], { input })).code).toBe(0);
    const node = await startBatonNode(p.configPath);

    const [failed] = await vi.waitFor(async () => {
      const listed = JSON.parse((await p.baton(['errors', 'pings', '--json'])).stdout) as ErrorsJson;
      expect(listed.errors).toHaveLength(1);
      return listed.errors;
    }, WAIT);
    expect(failed?.error).toContain(REASON);
    expect(failed?.error).toContain('SQLSTATE 23502');
    expect((await p.baton(['errors', 'pings'])).stdout).toContain('null value in column "timestamp"');
    expect(node.stderr).toContain(REASON.replaceAll('"', '\\"'));
    await vi.waitFor(() => {
      expect(node.stderr).toContain(`record ${failed?.id} moved to the error queue errors-pings`);
    }, WAIT);
    expect((await node.stop()).code).toBe(0);
  }, 90_000);

  it('drop-errors drops the ids that exist and exits 1 naming those that do not, with and without a node', async () => {
    const p = await project(store);
    const inserted = await p.baton([
      'sql',
      "INSERT INTO baton_queue_errors (queue, payload, attempts, error, enqueued_at) SELECT 'pings', '\\x00', 1, 'x', now() FROM generate_series(1, 2) RETURNING id",
    ]);
    expect(inserted.code).toBe(0);
    const [first, second] = inserted.stdout.match(/^\d+$/gm) ?? [];

    const alone = await p.baton(['drop-errors', 'pings', first!, '999']);
    expect(alone.stdout).toContain('dropped 1 record from errors-pings');
    expect(alone.stderr).toContain('no error record 999 in errors-pings');
    expect(alone.code).toBe(1);

    // Through the node on the embedded store.
    const node = await startBatonNode(p.configPath);
    const through = await p.baton(['drop-errors', 'pings', '998', second!, first!]);
    expect(through.stdout).toContain('dropped 1 record from errors-pings');
    expect(through.stderr).toContain(`no error record 998, ${first} in errors-pings`);
    expect(through.code).toBe(1);
    expect((await p.baton(['errors', 'pings'])).stdout).toContain('errors-pings is empty');
    expect((await node.stop()).code).toBe(0);
  }, 90_000);

  it('errors lists pages in id order and names the next one, past ids 10, 100 and 1000', async () => {
    const p = await project(store);
    const inserted = await p.baton([
      'sql',
      "INSERT INTO baton_queue_errors (id, queue, payload, attempts, error, enqueued_at) SELECT n, 'pings', '\\x00', 1, 'x', now() FROM unnest(ARRAY[2, 9, 10, 11, 99, 100, 101, 999, 1000, 1001]) AS n",
    ]);
    expect(inserted.code).toBe(0);
    const ids = (stdout: string) => stdout.match(/^\d+(?= )/gm) ?? [];

    const first = await p.baton(['errors', 'pings', '-n', '3']);
    expect(ids(first.stdout)).toEqual(['2', '9', '10']);
    expect(first.stderr).toContain('next page: baton errors pings --after 10');
    const second = await p.baton(['errors', 'pings', '-n', '4', '--after', '10']);
    expect(ids(second.stdout)).toEqual(['11', '99', '100', '101']);
    const last = await p.baton(['errors', 'pings', '-n', '4', '--after', '101', '--json']);
    expect((JSON.parse(last.stdout) as ErrorsJson).errors.map((e) => e.id)).toEqual(['999', '1000', '1001']);
    const before = await p.baton(['errors', 'pings', '-n', '4', '--before', '999']);
    expect(ids(before.stdout)).toEqual(['11', '99', '100', '101']);
    expect((await p.baton(['errors', 'pings', '--after', '1001'])).stdout).toContain(
      'no more records in errors-pings',
    );
  }, 90_000);

  it("says PostgreSQL's reason when a migration fails: migrate, with and without a node, and run", async () => {
    const p = await project(store, { 'migrations/pings/0001_create_pings.sql': CREATE_PINGS });
    const node = await startBatonNode(p.configPath);
    await p.write('migrations/pings/0002_bad.sql', "INSERT INTO pings (name) VALUES ('no time');\n");

    // Through the node on the embedded store; on its own on a server.
    const migrated = await p.baton(['migrate']);
    expect(migrated.stderr).toContain(REASON);
    expect(migrated.code).toBe(1);
    expect((await node.stop()).code).toBe(0);

    const alone = await p.baton(['migrate']);
    expect(alone.stderr).toContain(REASON);
    expect(alone.code).toBe(1);
    const run = await p.baton(['run']);
    expect(run.stderr).toContain(REASON);
    expect(run.code).not.toBe(0);
  }, 90_000);
});
