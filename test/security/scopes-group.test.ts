// Scopes in a group of real node processes (postgres elector): with a namespace-limited token listed first
// and the admin one after it, commands and nodes present the admin token (never the limited one), so
// `baton status`, `baton queues` and `baton failover` work, and a failover asked of a secondary is passed on
// to the primary; the limited token may not ask for a failover.
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { BatonNodeProcess } from '../support/process.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

const TEAM = 'team-a-token-0123456789';
const OPS = 'ops-admin-token-0123456789';

let database: TestDatabase | undefined;
afterEach(async () => {
  await cleanupAll();
  await database?.drop();
  database = undefined;
});

interface ClusterView {
  role: string;
  term: number;
  primary: string | null;
}

function call(node: BatonNodeProcess, token: string, method: string, path: string): Promise<Response> {
  return fetch(`${node.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(method === 'POST' ? { body: '{}' } : {}),
    signal: AbortSignal.timeout(10_000),
  });
}

async function view(node: BatonNodeProcess): Promise<ClusterView | undefined> {
  try {
    return (await (await call(node, OPS, 'GET', '/v1/cluster')).json()) as ClusterView;
  } catch {
    return undefined;
  }
}

/** The primary the two nodes agree on, and its term. */
async function agreed(nodes: BatonNodeProcess[]): Promise<{ primary: string; term: number }> {
  let result: { primary: string; term: number } | undefined;
  await expect
    .poll(
      async () => {
        const views = await Promise.all(nodes.map(view));
        const primaries = views.filter((candidate) => candidate?.role === 'primary');
        const first = views[0];
        result =
          primaries.length === 1 && first?.primary && views.every((v) => v?.term === first.term)
            ? { primary: first.primary, term: first.term }
            : undefined;
        return result !== undefined;
      },
      { timeout: 30_000, interval: 100 },
    )
    .toBe(true);
  if (result === undefined) throw new Error('no agreed primary');
  return result;
}

describe('admin calls in a group with scoped tokens', () => {
  it('commands and forwarded failovers use the admin token; the limited token is refused', async () => {
    database = await createTestDatabase();
    const configs: string[] = [];
    for (const name of ['n1', 'n2']) {
      const project = await tempProject({
        toml:
          `[node]\nname = "${name}"\ndata_dir = "data"\nshutdown_timeout_ms = 3000\n[log]\nlevel = "warn"\n` +
          `[http]\nport = ${await freePort()}\n` +
          `[[http.tokens]]\ntoken = "${TEAM}"\nnamespaces = ["team-a"]\n` +
          `[[http.tokens]]\ntoken = "${OPS}"\nscopes = ["admin"]\n` +
          `[store]\nurl = "${database.url}"\npool_size = 2\n` +
          `[group]\nname = "g"\nelector = "postgres"\nlease_ms = 2000\nrenew_deadline_ms = 1200\nheartbeat_ms = 200\n` +
          `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\nrun_on = "primary"\n`,
      });
      configs.push(project.configPath);
    }
    const nodes = await Promise.all(configs.map((config) => startBatonNode(config)));
    const first = await agreed(nodes);
    const secondary = nodes[first.primary === 'n1' ? 1 : 0] as BatonNodeProcess;
    const secondaryName = first.primary === 'n1' ? 'n2' : 'n1';

    // The limited token may not move the primary, on either node.
    for (const node of nodes) {
      const refused = await call(node, TEAM, 'POST', '/v1/cluster/failover');
      expect(refused.status).toBe(403);
      await refused.body?.cancel();
    }

    const status = await runBaton(['-c', configs[0] as string, 'status', '--json']);
    expect(status.stderr).toBe('');
    expect(status.code).toBe(0);
    const queues = await runBaton(['-c', configs[1] as string, 'queues', '--json']);
    expect(queues.stderr).toBe('');
    expect(queues.code).toBe(0);

    // Asked of the secondary, the failover is passed on to the primary with the node's admin token.
    const forwarded = await call(secondary, OPS, 'POST', '/v1/cluster/failover');
    expect(forwarded.status).toBe(200);
    expect(((await forwarded.json()) as { moved: boolean }).moved).toBe(true);
    const second = await agreed(nodes);
    expect(second.term).toBeGreaterThan(first.term);

    // And the command moves it back.
    const moved = await runBaton(['-c', configs[0] as string, 'failover', '--to', first.primary]);
    expect(moved.stderr).toBe('');
    expect(moved.code).toBe(0);
    const third = await agreed(nodes);
    expect(third.primary).toBe(first.primary);
    expect(third.term).toBeGreaterThan(second.term);
    expect(secondaryName).not.toBe(first.primary);
  }, 120_000);
});
