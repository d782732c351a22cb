// examples/app, a package of its own, as its README runs it: type-checked by its own strict tsconfig, then
// started from its code (`node --import tsx src/main.ts`) against the repository's build. Its handler stores
// an order once however often it comes, its route answers, and SIGTERM drains the node and ends the process.
import { cp, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it, vi } from 'vitest';

import { linkRepoPackages, tscArgs } from '../support/linked-app.js';
import { freePort, killGroup, runCommand, spawnCommand } from '../support/process.js';

const EXAMPLE = fileURLToPath(new URL('../../examples/app/', import.meta.url));
const cleanups: Array<() => Promise<unknown>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('examples/app', () => {
  it(
    'type-checks, starts from its code, stores orders once, and stops on SIGTERM',
    { timeout: 240_000 },
    async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'baton-example-app-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true, maxRetries: 5 }));
      await cp(EXAMPLE, dir, {
        recursive: true,
        filter: (source) => !/[/\\](node_modules|\.baton)$/.test(source),
      });
      await linkRepoPackages(dir, ['drizzle-orm', 'tsx', 'typescript', '@types/node']);

      const checked = await runCommand(process.execPath, tscArgs(dir), { cwd: dir, timeoutMs: 120_000 });
      expect(checked.stdout + checked.stderr).toBe('');
      expect(checked.code).toBe(0);

      const port = await freePort();
      const url = `http://127.0.0.1:${port}`;
      const app = spawnCommand(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
        cwd: dir,
        env: { BATON_HTTP__PORT: String(port) },
      });
      cleanups.push(() => Promise.resolve(killGroup(app)));
      app.stdin?.end();
      let output = '';
      app.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
      app.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
      const exited = new Promise<number | null>((resolve) => app.once('exit', resolve));

      await vi.waitFor(
        async () => {
          const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
          expect(response.status, output).toBe(200);
        },
        { timeout: 90_000, interval: 200 },
      );
      expect(output).toContain(`orders in at ${url}/v1/queues/orders/records`);
      expect(output).toContain('role: not-in-group (was none)');

      const order = '{"id":"A-1","customer":"ada","total_cents":1250}';
      const posted = await fetch(`${url}/v1/queues/orders/records`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson' },
        body: `${order}\n${order}\n{"id":"A-2","customer":"bob"}\n{"id":"A-3","customer":"cy","total_cents":5}\n`,
      });
      expect(posted.status).toBe(202);
      await vi.waitFor(
        async () => {
          const response = await fetch(`${url}/orders/totals`);
          expect(await response.json()).toEqual({ orders: 2, total_cents: 1255 });
        },
        { timeout: 30_000, interval: 200 },
      );
      // The order without a total is not stored: it waits for its retries, then the error queue.
      await vi.waitFor(() => expect(output).toContain('\\"total_cents\\" must be a whole number of cents'), {
        timeout: 30_000,
      });

      app.kill('SIGTERM');
      expect(await exited, output).toBe(0);
      expect(output).toContain('component baton.queue.orders: stopped');
    },
  );
});
