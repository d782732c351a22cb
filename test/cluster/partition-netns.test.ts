// A real network partition: two node processes, each in a network namespace of its own, reach a private
// PostgreSQL server through veth pairs; nftables inside the primary's namespace drops every packet (nothing
// is reset). A primary-only store queue, fed all along, writes fenced rows. Judged on the server's clock
// (commit timestamps): the old primary's last write lands before the new primary's first, the failover stays
// within lease_ms + heartbeat_ms + SLACK_MS, no late write of the old term lands afterwards, and once the cut
// heals the old primary is a secondary of the new term.
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import type { Namespace } from '../support/netns.js';
import { createNamespace, removeLeftoverNamespaces } from '../support/netns.js';
import type { PrivatePostgres } from '../support/private-services.js';
import { startPrivatePostgres } from '../support/private-services.js';
import type { BatonNodeProcess } from '../support/process.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  roleLines,
  startBatonNode,
  tempProject,
} from '../support/process.js';

const GROUP = { leaseMs: 3000, renewDeadlineMs: 1500, heartbeatMs: 250 };
/**
 * What the failover may take past lease_ms + heartbeat_ms: the watcher's look at the lease and the end of the
 * stale session, the take-over, ending the old sessions and raising the fence, then the runner's first claim
 * and commit. The partition bench measures up to about 60 ms of it; the rest is room for a loaded 2-core
 * machine.
 */
const SLACK_MS = 500;

/** The nodes listen on their namespace's address, not loopback, so their API wants a token. */
const TOKEN = 'partition-test-token';
const AUTHORIZATION = { authorization: `Bearer ${TOKEN}` };

const FENCED_WRITES_TABLE = `CREATE TABLE fenced_writes (
  row bigserial PRIMARY KEY, id integer NOT NULL, node text NOT NULL, term bigint NOT NULL,
  at timestamptz NOT NULL)`;

let server: PrivatePostgres | undefined;
let admin: pg.Client | undefined;
let feeding: AbortController | undefined;
const namespaces: Namespace[] = [];

beforeAll(async () => {
  // What a run that crashed before its cleanup left behind.
  await removeLeftoverNamespaces();
});

afterEach(async () => {
  feeding?.abort();
  await cleanupAll();
  await admin?.end().catch(() => undefined);
  await Promise.all(namespaces.splice(0).map((namespace) => namespace.dispose()));
  await server?.dispose();
  server = undefined;
  admin = undefined;
  feeding = undefined;
});

afterAll(async () => {
  await removeLeftoverNamespaces();
});

async function waitFor<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  what: string,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** GET /v1/cluster of a node, or undefined when it does not answer. */
async function clusterView(
  node: BatonNodeProcess,
): Promise<{ role: string; term: number; primary?: string } | undefined> {
  try {
    const response = await fetch(`${node.url}/v1/cluster`, {
      headers: AUTHORIZATION,
      signal: AbortSignal.timeout(2000),
    });
    return response.ok
      ? ((await response.json()) as { role: string; term: number; primary?: string })
      : undefined;
  } catch {
    return undefined;
  }
}

/** Posts {"id": n} records to `node` every 50 ms until `signal` aborts; a failed post is sent again. */
async function feed(node: BatonNodeProcess, signal: AbortSignal): Promise<void> {
  let next = 1;
  while (!signal.aborted) {
    const body = `${JSON.stringify({ id: next })}\n${JSON.stringify({ id: next + 1 })}\n`;
    try {
      const response = await fetch(`${node.url}/v1/queues/writes/records`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson', ...AUTHORIZATION },
        body,
        signal: AbortSignal.any([signal, AbortSignal.timeout(5000)]),
      });
      await response.body?.cancel();
      if (response.status === 202) next += 2;
    } catch {
      // The node is busy or the test is over: try again.
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

interface Write {
  node: string;
  term: number;
  /** pg_xact_commit_timestamp(xmin), in ms since the epoch on the server's clock. */
  committed: number;
}

async function writes(): Promise<Write[]> {
  const result = await admin?.query<{ node: string; term: string; committed: Date }>(
    `SELECT node, term, pg_xact_commit_timestamp(xmin) AS committed FROM fenced_writes ORDER BY committed`,
  );
  return (result?.rows ?? []).map((row) => ({
    node: row.node,
    term: Number(row.term),
    committed: row.committed.getTime(),
  }));
}

describe('a partition of the primary by nftables in its network namespace', () => {
  it('the old primary stops before the new one writes, within the bound, and comes back as secondary', async () => {
    const nsA = await createNamespace();
    namespaces.push(nsA);
    const nsB = await createNamespace();
    namespaces.push(nsB);
    server = await startPrivatePostgres({
      listen: [nsA.hostAddress, nsB.hostAddress, '127.0.0.1'],
      settings: { track_commit_timestamp: 'on' },
    });
    admin = new pg.Client({ host: '127.0.0.1', port: server.port, user: 'postgres', database: 'postgres' });
    await admin.connect();
    await admin.query(FENCED_WRITES_TABLE);

    const config = async (name: string, namespace: Namespace) =>
      (
        await tempProject({
          toml:
            `[node]\nname = "${name}"\ndata_dir = "data"\nshutdown_timeout_ms = 2000\n[log]\nlevel = "info"\n` +
            `[http]\nhost = "${namespace.address}"\nport = ${await freePort()}\ntoken = "${TOKEN}"\n` +
            `[store]\nurl = "postgres://postgres@${namespace.hostAddress}:${server?.port}/postgres"\n` +
            `pool_size = 3\nstatement_timeout_ms = 1000\n` +
            `[group]\nname = "cut"\nelector = "postgres"\nlease_ms = ${GROUP.leaseMs}\n` +
            `renew_deadline_ms = ${GROUP.renewDeadlineMs}\nheartbeat_ms = ${GROUP.heartbeatMs}\n` +
            `[queues.writes]\nhandler = "${FIXTURES_DIR}fenced-writes-handler.ts"\nrun_on = "primary"\n`,
        })
      ).configPath;

    // a starts first, so it is the primary; b feeds the queue throughout (it stays reachable).
    const a = await startBatonNode(await config('a', nsA), {
      namespace: nsA.name,
      env: { FENCED_WRITES_NODE: 'a' },
    });
    await waitFor(() => roleLines(a).find((line) => line.role === 'primary'), 30_000, 'a to be primary');
    const b = await startBatonNode(await config('b', nsB), {
      namespace: nsB.name,
      env: { FENCED_WRITES_NODE: 'b' },
    });
    await waitFor(() => roleLines(b).find((line) => line.role === 'secondary'), 30_000, 'b to follow');
    const oldTerm = roleLines(a).find((line) => line.role === 'primary')?.term ?? 0;
    feeding = new AbortController();
    const feeder = feed(b, feeding.signal);
    await waitFor(
      async () => ((await writes()).some((write) => write.node === 'a') ? true : undefined),
      30_000,
      'a to write',
    );

    // The cut, timed on the server's clock once nft has put its rule in: a's last renewal came before it, so
    // its lease runs out at most lease_ms later.
    await nsA.cut();
    const cutAt =
      (await admin.query<{ at: Date }>('SELECT clock_timestamp() AS at')).rows[0]?.at.getTime() ?? 0;
    const firstNew = await waitFor(
      async () => (await writes()).find((write) => write.term > oldTerm),
      60_000,
      'a write of a newer term',
    );
    const stepDown = await waitFor(
      () => roleLines(a).find((line) => line.role === 'secondary' && line.term >= oldTerm),
      30_000,
      'a to step down',
    );
    const takeOver = await waitFor(
      () => roleLines(b).find((line) => line.role === 'primary'),
      30_000,
      'b to log its take-over',
    );
    const fence = await admin.query<{ term: string; raised_at: Date }>(
      `SELECT term, raised_at FROM baton.baton_fence WHERE group_name = 'cut'`,
    );

    // Healed: a comes back as a secondary of b's term.
    await nsA.heal();
    await waitFor(
      async () => {
        const view = await clusterView(a);
        return view?.role === 'secondary' && view.primary === 'b' && view.term === firstNew.term
          ? view
          : undefined;
      },
      60_000,
      'a to be a secondary of b again',
    );
    // Its late writes, if any, have had time to land (or to be refused) once its connections work again.
    await waitFor(
      async () => ((await writes()).filter((write) => write.node === 'b').length > 20 ? true : undefined),
      30_000,
      'b to keep writing',
    );
    feeding.abort();
    await feeder;

    const all = await writes();
    const lastOld = Math.max(...all.filter((write) => write.term <= oldTerm).map((write) => write.committed));
    const failoverMs = firstNew.committed - cutAt;
    const bound = GROUP.leaseMs + GROUP.heartbeatMs + SLACK_MS;
    console.log(
      `partition: cut → fence raised at term ${fence.rows[0]?.term} ${(fence.rows[0]?.raised_at.getTime() ?? 0) - cutAt} ms, ` +
        `→ first write of the new term ${failoverMs} ms (bound ${bound} ms); a's last write ${lastOld - cutAt} ms; ` +
        `a logged its step-down (${stepDown.cause}) ${takeOver.time - stepDown.time} ms before b logged primary`,
    );
    expect(firstNew).toMatchObject({ node: 'b' });
    expect(Number(fence.rows[0]?.term)).toBe(firstNew.term);
    // The old primary's last write landed before the new primary's first, and none of its after it.
    expect(lastOld).toBeLessThan(firstNew.committed);
    expect(
      all.filter((write) => write.term < firstNew.term && write.committed >= firstNew.committed),
    ).toEqual([]);
    expect(all.filter((write) => write.node === 'a' && write.term !== oldTerm)).toEqual([]);
    expect(failoverMs).toBeLessThanOrEqual(bound);
    // It stepped down on its own (renewals failed), before b acted.
    expect(stepDown.cause).toBe('renew-failed');
    expect(stepDown.time).toBeLessThan(takeOver.time);
    expect(a.process.exitCode).toBeNull();
    expect(b.process.exitCode).toBeNull();
  }, 240_000);
});
