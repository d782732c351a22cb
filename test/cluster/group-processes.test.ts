// A group of real node processes on the postgres elector: one primary; kill -9 of the primary gives exactly
// one new primary with a higher term; `baton status` lists the members; `baton failover --to` moves the
// primary; a queue with run_on = "primary" is consumed by the primary only.
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { agreedPrimary, waitFor } from '../support/group.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

let database: TestDatabase | undefined;
afterEach(async () => {
  await cleanupAll();
  await database?.drop();
  database = undefined;
});

async function group(size: number) {
  database = await createTestDatabase();
  const configs: string[] = [];
  for (let index = 0; index < size; index++) {
    const name = `n${index + 1}`;
    const project = await tempProject({
      toml:
        `[node]\nname = "${name}"\ndata_dir = "data"\nshutdown_timeout_ms = 3000\n[log]\nlevel = "warn"\n` +
        `[http]\nport = ${await freePort()}\n[store]\nurl = "${database.url}"\npool_size = 2\n` +
        `[group]\nname = "g"\nelector = "postgres"\nlease_ms = 2000\nrenew_deadline_ms = 1200\nheartbeat_ms = 200\n` +
        `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\nrun_on = "primary"\n`,
    });
    configs.push(project.configPath);
  }
  const nodes = await Promise.all(configs.map((config) => startBatonNode(config)));
  return { nodes, configs };
}

describe('a group of node processes on the postgres elector', () => {
  it('elects one primary; kill -9 of it gives exactly one new primary with a higher term', async () => {
    const { nodes } = await group(3);
    const first = await agreedPrimary(nodes, 20_000);
    const killedAt = Date.now();
    await first.primary.stop('SIGKILL');
    const survivors = nodes.filter((node) => node !== first.primary);
    const second = await agreedPrimary(survivors, 20_000);
    console.log(`new primary agreed ${Date.now() - killedAt} ms after kill -9`);
    expect(second.term).toBeGreaterThan(first.term);
    expect(second.primary).not.toBe(first.primary);
  }, 90_000);

  it('lists the members in baton status, and moves the primary with baton failover --to', async () => {
    const { nodes, configs } = await group(3);
    const first = await agreedPrimary(nodes, 20_000);
    const status = await runBaton(['-c', configs[0] as string, 'status', '--json']);
    expect(status.stderr).toBe('');
    const parsed = JSON.parse(status.stdout) as {
      members: Array<{ node: string; role: string }>;
      primary: string;
    };
    expect(parsed.members.map((m) => m.node)).toEqual(['n1', 'n2', 'n3']);
    expect(parsed.members.filter((m) => m.role === 'primary')).toHaveLength(1);

    const target = nodes.findIndex((node) => node !== first.primary);
    const targetName = `n${target + 1}`;
    const moved = await runBaton(['-c', configs[0] as string, 'failover', '--to', targetName]);
    expect(moved.stderr).toBe('');
    const second = await agreedPrimary(nodes, 20_000);
    expect(second.primary).toBe(nodes[target]);
    expect(second.term).toBeGreaterThan(first.term);
  }, 90_000);

  it('refuses failover to an unknown node, and to the primary itself moves nothing', async () => {
    const { nodes, configs } = await group(2);
    const first = await agreedPrimary(nodes, 20_000);
    const primaryName = `n${nodes.indexOf(first.primary) + 1}`;

    const unknown = await runBaton(['-c', configs[0] as string, 'failover', '--to', 'nosuch']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/no live member "nosuch"/);

    const itself = await runBaton(['-c', configs[0] as string, 'failover', '--to', primaryName]);
    expect(itself.code).toBe(0);
    expect(itself.stdout).toMatch(/primary already: nothing moves/);

    // Neither request moved anything: the same primary, the same term.
    const after = await agreedPrimary(nodes, 20_000);
    expect(after.primary).toBe(first.primary);
    expect(after.term).toBe(first.term);
  }, 90_000);

  it('right after kill -9 of the primary, status and failover ask the live members and succeed', async () => {
    const { nodes, configs } = await group(3);
    const first = await agreedPrimary(nodes, 20_000);
    const survivor = nodes.findIndex((node) => node !== first.primary);
    await first.primary.stop('SIGKILL');
    // The dead primary is still listed by the membership (for 3 leases): it must not fail the commands.
    const status = await runBaton(['-c', configs[survivor] as string, 'status', '--json']);
    expect(status.code).toBe(0);
    expect(status.stderr).toBe('');
    const survivors = nodes.filter((node) => node !== first.primary);
    const second = await agreedPrimary(survivors, 20_000);
    const moved = await runBaton(['-c', configs[survivor] as string, 'failover']);
    expect(moved.code).toBe(0);
    expect(moved.stderr).toBe('');
    const third = await agreedPrimary(survivors, 20_000);
    expect(third.term).toBeGreaterThan(second.term);
  }, 90_000);

  it("shows the running nodes' processed and failed counts in baton queues", async () => {
    const { nodes, configs } = await group(2);
    await agreedPrimary(nodes, 20_000);
    const published = await runBaton(['-c', configs[0] as string, 'publish', 'ids', '-'], {
      input: Array.from({ length: 20 }, (_, id) => JSON.stringify({ id })).join('\n'),
    });
    expect(published.code).toBe(0);
    const counted = await waitFor(
      async () => {
        const listing = await runBaton(['-c', configs[1] as string, 'queues', '--json']);
        const queues = JSON.parse(listing.stdout) as {
          queues: Array<{ processed: number | null; failed: number | null }>;
        };
        const queue = queues.queues[0];
        return queue?.processed === 20 ? queue : undefined;
      },
      30_000,
      'the 20 records counted as processed',
    );
    expect(counted.failed).toBe(0);
  }, 90_000);
});
