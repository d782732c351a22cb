// The owner lock of the embedded store against pid reuse: a lock left by a dead node whose pid now belongs
// to an unrelated live process (a real `sleep`) is taken over, since that process started at another time;
// a lock that names a live process with its own start time, or an older lock without a start time, still
// holds; and a real running node blocks a second one with a message naming it.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import { startNode, StoreLockedError } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import { LOCK_FILE, readStoreLock } from '../../src/store/lock.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

const handler = fileURLToPath(new URL('./handlers/words.ts', import.meta.url));
const log = createLogger({ level: 'silent' });
const sleepers: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(async () => {
  // Each sleeper leads its own process group: kill the group, even when the test failed half-way.
  for (const sleeper of sleepers.splice(0)) {
    if (sleeper.pid !== undefined && sleeper.exitCode === null) process.kill(-sleeper.pid, 'SIGKILL');
  }
  await cleanupAll();
  await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

/** A live process that has nothing to do with Baton, as a pid reused after a node died would be. */
function unrelatedProcess(): number {
  const sleeper = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
  sleepers.push(sleeper);
  if (sleeper.pid === undefined) throw new Error('could not spawn sleep');
  return sleeper.pid;
}

/** The start of `pid` as the lock records it: boot id and field 22 of /proc/<pid>/stat. */
async function startOf(pid: number): Promise<string> {
  const boot = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return `${boot}:${stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]}`;
}

async function dataDirWithLock(owner: Record<string, unknown>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'baton-lock-'));
  dirs.push(dir);
  await mkdir(join(dir, 'data'));
  await writeFile(join(dir, 'data', LOCK_FILE), `${JSON.stringify(owner)}\n`);
  return join(dir, 'data');
}

const start = (dataDir: string) =>
  startNode(
    {
      node: { name: 'lock-node', data_dir: dataDir },
      http: { port: 0 },
      queues: { words: { handler } },
    },
    { log },
  );

describe('a stale baton.lock', () => {
  it('is taken over when its pid runs an unrelated process started at another time, or it predates the boot', async () => {
    const pid = unrelatedProcess();
    const [boot, ticks] = (await startOf(pid)).split(':');
    const stale = [
      // The node that wrote it died; its pid went to a process started one tick later.
      {
        pid,
        started: `${boot}:${Number(ticks) - 1}`,
        address: 'http://127.0.0.1:9',
        node: 'dead',
        kind: 'node',
      },
      // Written before the machine restarted: whatever runs under its pid now is another process.
      {
        pid,
        started: `00000000-0000-0000-0000-000000000000:${ticks}`,
        address: null,
        node: 'dead',
        kind: 'node',
      },
    ];
    const dataDir = await dataDirWithLock(stale[0] ?? {});
    for (const lock of stale) {
      await writeFile(join(dataDir, LOCK_FILE), `${JSON.stringify(lock)}\n`);
      const node = await start(dataDir);
      try {
        const owner = await readStoreLock(dataDir);
        expect(owner?.pid).toBe(process.pid);
        expect(owner?.started).toBe(await startOf(process.pid));
        expect(owner?.address).toBe(node.address);
      } finally {
        await node.stop();
      }
      expect(await readStoreLock(dataDir)).toBeUndefined();
    }
  }, 180_000);

  it('holds when its pid runs the process it names, or when it names no start time (older files)', async () => {
    const pid = unrelatedProcess();
    for (const started of [await startOf(pid), undefined]) {
      const dataDir = await dataDirWithLock({ pid, started, address: null, node: 'live-node', kind: 'node' });
      const refused = await start(dataDir).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(refused, String(started)).toBeInstanceOf(StoreLockedError);
      expect((refused as Error).message).toContain(`in use by live-node (pid ${pid})`);
      expect((await readStoreLock(dataDir))?.pid).toBe(pid);
    }
  });
});

describe('a running node', () => {
  it('blocks a second node on its data folder with a message naming it and its address', async () => {
    const toml = (port: number) =>
      `[node]\nname = "first"\ndata_dir = "data"\n[log]\nlevel = "warn"\n` +
      `[http]\nport = ${port}\n[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\n`;
    const project = await tempProject({ toml: toml(await freePort()) });
    const first = await startBatonNode(project.configPath);
    const owner = await readStoreLock(project.path('data'));
    expect(owner?.pid).toBe(first.pid);
    expect(owner?.started).toBe(await startOf(first.pid));

    await project.write('second.toml', toml(await freePort()).replace('name = "first"', 'name = "second"'));
    const second = await runBaton(['-c', project.path('second.toml'), 'run'], { cwd: project.dir });
    expect(second.code).not.toBe(0);
    expect(second.stderr).toContain(`is in use by first (pid ${first.pid}) at ${first.url}`);
    expect((await readStoreLock(project.path('data')))?.pid).toBe(first.pid);
    expect((await first.stop()).code).toBe(0);
  }, 90_000);
});
