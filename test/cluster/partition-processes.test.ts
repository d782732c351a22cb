// A partition on real processes: the primary's connections to PostgreSQL go through a TCP proxy that is
// black-holed (packets vanish; nothing is reset). The primary steps down before the other node acts as
// primary (both times from the nodes' own logs, on one host clock), the new term is higher, and once the
// partition heals the old primary stays a secondary.
import { afterEach, describe, expect, it } from 'vitest';

import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  roleLines,
  startBatonNode,
  tempProject,
} from '../support/process.js';
import type { TcpProxy } from '../support/tcp-proxy.js';
import { startTcpProxy } from '../support/tcp-proxy.js';

let database: TestDatabase | undefined;
let proxy: TcpProxy | undefined;
afterEach(async () => {
  await cleanupAll();
  await proxy?.close();
  await database?.drop();
  database = undefined;
  proxy = undefined;
});

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('a partition of the primary, on real processes', () => {
  it('the old primary steps down before the new one acts; the new term is higher', async () => {
    database = await createTestDatabase();
    const url = new URL(database.url);
    proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
    const proxied = new URL(database.url);
    proxied.port = String(proxy.port);
    const config = async (name: string, storeUrl: string) =>
      (
        await tempProject({
          toml:
            `[node]\nname = "${name}"\ndata_dir = "data"\nshutdown_timeout_ms = 2000\n[log]\nlevel = "info"\n` +
            `[http]\nport = ${await freePort()}\n[store]\nurl = "${storeUrl}"\npool_size = 2\nstatement_timeout_ms = 1000\n` +
            `[group]\nname = "p"\nelector = "postgres"\nlease_ms = 3000\nrenew_deadline_ms = 1500\nheartbeat_ms = 200\n` +
            `[queues.ids]\nhandler = "${FIXTURES_DIR}ids-handler.ts"\nrun_on = "primary"\n`,
        })
      ).configPath;

    // a goes through the proxy and starts first, so it is the primary.
    const a = await startBatonNode(await config('a', proxied.toString()));
    await waitFor(() => roleLines(a).some((line) => line.role === 'primary'), 15_000, 'a to be primary');
    const b = await startBatonNode(await config('b', database.url));
    await waitFor(() => roleLines(b).some((line) => line.role === 'secondary'), 15_000, 'b to follow');
    const firstTerm = roleLines(a).find((line) => line.role === 'primary')?.term ?? 0;

    proxy.blackhole();
    await waitFor(() => roleLines(b).some((line) => line.role === 'primary'), 20_000, 'b to take over');
    await waitFor(() => roleLines(a).some((line) => line.role === 'secondary'), 20_000, 'a to step down');
    const stepDown = roleLines(a).find((line) => line.role === 'secondary');
    const takeOver = roleLines(b).find((line) => line.role === 'primary');
    console.log(
      `a stepped down (${stepDown?.cause}) ${(takeOver?.time ?? 0) - (stepDown?.time ?? 0)} ms before b acted`,
    );
    expect(stepDown?.cause).toBe('renew-failed');
    expect(stepDown?.time).toBeLessThan(takeOver?.time ?? 0);
    expect(takeOver?.term).toBeGreaterThan(firstTerm);

    // The partition heals: a comes back as a secondary of b's term.
    proxy.restore();
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const latest = roleLines(a).at(-1);
    expect(latest?.role).toBe('secondary');
    expect(a.process.exitCode).toBeNull();
  }, 90_000);
});
