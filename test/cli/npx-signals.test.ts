// `npx baton run`, the README's form, stops its node gracefully. npm runs the bin through `sh -c`: a SIGTERM
// to npx goes to that shell, which dies of it, so the node learns of it by its launcher going away. A Ctrl-C
// (SIGINT to the terminal's whole process group) reaches the node itself. Either way the node drains, frees
// its port and its owner lock, and leaves no process behind.
import { join } from 'node:path';

import { afterEach, describe, expect, it, vi } from 'vitest';

import { readStoreLock } from '../../src/store/lock.js';
import type { TempProject } from '../support/process.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  killGroup,
  REPO_ROOT,
  spawnCommand,
  startBatonNode,
  tempProject,
  within,
} from '../support/process.js';

afterEach(cleanupAll);

async function project(): Promise<TempProject> {
  return tempProject({
    toml: {
      node: { name: 'npx-node', data_dir: 'data' },
      http: { port: await freePort() },
      queues: { ids: { handler: join(FIXTURES_DIR, 'ids-handler.ts') } },
    },
  });
}

/** True while the process `pid` runs (a negative pid: while a process of that group runs). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function refused(url: string): Promise<boolean> {
  try {
    await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
    return false;
  } catch {
    return true;
  }
}

/** Starts `npx baton -c <config> run` from the repository (npx runs its own bin) and finds the node's pid. */
async function startUnderNpx(p: TempProject) {
  const launched = await startBatonNode(p.configPath, {
    cwd: REPO_ROOT,
    command: ['npx', 'baton', '-c', p.configPath, 'run'],
    readyTimeoutMs: 120_000,
  });
  const owner = await readStoreLock(p.path('data'));
  expect(owner?.kind).toBe('node');
  const nodePid = owner?.pid ?? 0;
  // npx is not the node: it runs it through a shell.
  expect(nodePid).not.toBe(launched.pid);
  return { launched, nodePid };
}

async function expectStoppedAndGone(
  p: TempProject,
  url: string,
  pgid: number,
  stderr: string,
): Promise<void> {
  expect(stderr).toContain('node npx-node stopped');
  expect(stderr).not.toContain('exiting at once');
  expect(await refused(url)).toBe(true);
  expect(await readStoreLock(p.path('data'))).toBeUndefined();
  await vi.waitFor(() => expect(alive(-pgid)).toBe(false), { timeout: 10_000, interval: 100 });
}

describe('npx baton run', () => {
  it('SIGTERM to npx: the node sees its launcher gone, drains and exits, leaving nothing running', async () => {
    const p = await project();
    const { launched, nodePid } = await startUnderNpx(p);
    launched.process.kill('SIGTERM');
    // The result comes once the node, which shares npx's output, has exited too.
    const result = await within(launched.waitExit(), 60_000, 'npx baton run after SIGTERM');
    expect(result.stderr).toContain(`is gone: stopping (finishing in-flight batches)`);
    await vi.waitFor(() => expect(alive(nodePid)).toBe(false), { timeout: 10_000, interval: 100 });
    await expectStoppedAndGone(p, launched.url, launched.pid, result.stderr);
  }, 240_000);

  it('Ctrl-C (SIGINT to the process group): the node itself drains and exits', async () => {
    const p = await project();
    const { launched } = await startUnderNpx(p);
    process.kill(-launched.pid, 'SIGINT');
    const result = await within(launched.waitExit(), 60_000, 'npx baton run after SIGINT');
    expect(result.stderr).toContain('SIGINT: stopping (finishing in-flight batches)');
    // npx's own status is npm's: where `sh` is dash, the shell between npm and the node dies of the SIGINT
    // and npm ends itself with it (130 in a shell); the node's exit is not seen there.
    await expectStoppedAndGone(p, launched.url, launched.pid, result.stderr);
  }, 240_000);
});

describe('npx baton events listen', () => {
  it('SIGTERM to npx: the listener sees its launcher gone and exits, leaving nothing running', async () => {
    const p = await project();
    const listener = spawnCommand('npx', ['baton', '-c', p.configPath, 'events', 'listen', '*'], {
      cwd: REPO_ROOT,
    });
    const pgid = listener.pid ?? 0;
    try {
      // Listening once it holds the embedded store (no node runs: the command opens it itself).
      await vi.waitFor(async () => expect((await readStoreLock(p.path('data')))?.pid).toBeGreaterThan(0), {
        timeout: 120_000,
        interval: 200,
      });
      listener.kill('SIGTERM');
      // Sent as soon as the store is open, before the listener is: a launcher gone that early counts too.
      await vi.waitFor(() => expect(alive(-pgid)).toBe(false), { timeout: 60_000, interval: 200 });
      expect(await readStoreLock(p.path('data'))).toBeUndefined();
    } finally {
      killGroup(listener);
    }
  }, 240_000);
});
