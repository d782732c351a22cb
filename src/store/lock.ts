// The owner file of an embedded store. PGlite allows one process at a time, so the process that opens the
// store writes `baton.lock` (pid, start time and HTTP address) in the data folder; other commands read it and
// go through the owner's HTTP API instead. The lock of a dead owner is taken over: its pid no longer runs,
// or (on Linux) runs a process started at another time, which got the pid after the owner died.
import { BackendUnavailableError } from '../errors.js';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface LockOwner {
  readonly pid: number;
  /**
   * When the owner started: `<boot id>:<start time in clock ticks since boot>` from /proc on Linux;
   * undefined elsewhere and in older files (the pid alone then decides).
   */
  readonly started: string | undefined;
  /** Base URL of the owner's HTTP API, once it listens. */
  readonly address: string | undefined;
  readonly node: string | undefined;
  /** A node (`run`, `startNode`) or a CLI command that opened the store for a moment; undefined in old files. */
  readonly kind: OwnerKind | undefined;
}

export type OwnerKind = 'node' | 'command';

export interface StoreLock {
  readonly path: string;
  /** Records the owner's HTTP address so that CLI commands can reach it. */
  setAddress(address: string): Promise<void>;
  release(): Promise<void>;
}

export type LockAttempt = { acquired: true; lock: StoreLock } | { acquired: false; owner: LockOwner };

export const LOCK_FILE = 'baton.lock';

export async function acquireStoreLock(
  dataDir: string,
  node: string,
  kind: OwnerKind = 'node',
): Promise<LockAttempt> {
  await mkdir(dataDir, { recursive: true });
  const path = join(dataDir, LOCK_FILE);
  const self: LockOwner = {
    pid: process.pid,
    started: await processStart(process.pid),
    address: undefined,
    node,
    kind,
  };
  for (let tries = 0; tries < 5; tries++) {
    try {
      const handle = await open(path, 'wx');
      await handle.writeFile(serialise(self));
      await handle.close();
      return { acquired: true, lock: makeLock(path, self) };
    } catch (error) {
      if (!isCode(error, 'EEXIST')) throw error;
    }
    const owner = await readStoreLock(dataDir);
    if (owner && owner.pid !== process.pid && (await isRunning(owner))) return { acquired: false, owner };
    // The owner died, its pid went to another process, or the file is unreadable: take the lock over.
    await rm(path, { force: true });
  }
  throw new BackendUnavailableError('store lock', `could not take ${path}: it keeps changing hands`);
}

/** The current owner, or undefined when there is no lock file or it cannot be parsed. */
export async function readStoreLock(dataDir: string): Promise<LockOwner | undefined> {
  let text: string;
  try {
    text = await readFile(join(dataDir, LOCK_FILE), 'utf8');
  } catch (error) {
    if (isCode(error, 'ENOENT')) return undefined;
    throw error;
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const { pid, started, address, node, kind } = parsed as Record<string, unknown>;
    if (typeof pid !== 'number') return undefined;
    return {
      pid,
      started: typeof started === 'string' ? started : undefined,
      address: typeof address === 'string' ? address : undefined,
      node: typeof node === 'string' ? node : undefined,
      kind: kind === 'node' || kind === 'command' ? kind : undefined,
    };
  } catch {
    return undefined;
  }
}

/** The live owner of the store, if another process holds it. */
export async function liveStoreOwner(dataDir: string): Promise<LockOwner | undefined> {
  const owner = await readStoreLock(dataDir);
  return owner && owner.pid !== process.pid && (await isRunning(owner)) ? owner : undefined;
}

function makeLock(path: string, self: LockOwner): StoreLock {
  let released = false;
  return {
    path,
    async setAddress(address: string): Promise<void> {
      if (!released) await writeFile(path, serialise({ ...self, address }));
    },
    async release(): Promise<void> {
      if (released) return;
      released = true;
      const text = await readFile(path, 'utf8').catch(() => '');
      // Only remove the file if it is still ours.
      if (text.includes(`"pid":${process.pid},`)) await rm(path, { force: true });
    },
  };
}

function serialise(owner: LockOwner): string {
  return (
    JSON.stringify({
      pid: owner.pid,
      started: owner.started ?? null,
      address: owner.address ?? null,
      node: owner.node ?? null,
      kind: owner.kind ?? null,
    }) + '\n'
  );
}

/**
 * True while the owner runs: its pid is alive and, when the lock and /proc both tell, the process behind
 * it started when the owner did. A pid that runs but cannot be checked (no /proc, another user's process
 * hidden by `hidepid`) counts as the owner: a live node's store must never be opened twice.
 */
async function isRunning(owner: LockOwner): Promise<boolean> {
  if (!isAlive(owner.pid)) return false;
  if (owner.started === undefined) return true;
  const started = await processStart(owner.pid);
  if (started !== undefined) return started === owner.started;
  // The pid's start is hidden; a lock written before the last boot names a process that is gone anyway.
  const boot = await bootId();
  return boot === undefined || owner.started.startsWith(`${boot}:`);
}

/** `<boot id>:<start time in clock ticks since boot>` of a running pid (field 22 of /proc/<pid>/stat). */
async function processStart(pid: number): Promise<string | undefined> {
  const [boot, stat] = await Promise.all([
    bootId(),
    readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined),
  ]);
  if (boot === undefined || stat === undefined) return undefined;
  // The second field, the command name in parentheses, may hold spaces and ')': fields 3… follow the last ')'.
  const ticks = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[22 - 3];
  return ticks !== undefined && /^\d+$/.test(ticks) ? `${boot}:${ticks}` : undefined;
}

async function bootId(): Promise<string | undefined> {
  const text = await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => undefined);
  return text?.trim() || undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return isCode(error, 'EPERM');
  }
}

function isCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && 'code' in error && error.code === code;
}
