// The owner file of an embedded store. PGlite allows one process at a time, so the process that opens the
// store writes `baton.lock` (pid and HTTP address) in the data folder; other commands read it and go through
// the owner's HTTP API instead. The lock of a dead pid is taken over.
import { BackendUnavailableError } from '../errors.js';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface LockOwner {
  readonly pid: number;
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
  for (let tries = 0; tries < 5; tries++) {
    try {
      const handle = await open(path, 'wx');
      await handle.writeFile(serialise({ pid: process.pid, address: undefined, node, kind }));
      await handle.close();
      return { acquired: true, lock: makeLock(path, node, kind) };
    } catch (error) {
      if (!isCode(error, 'EEXIST')) throw error;
    }
    const owner = await readStoreLock(dataDir);
    if (owner && owner.pid !== process.pid && isAlive(owner.pid)) return { acquired: false, owner };
    // The owner died (or the file is unreadable): take the lock over.
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
    const { pid, address, node, kind } = parsed as Record<string, unknown>;
    if (typeof pid !== 'number') return undefined;
    return {
      pid,
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
  return owner && owner.pid !== process.pid && isAlive(owner.pid) ? owner : undefined;
}

function makeLock(path: string, node: string, kind: OwnerKind): StoreLock {
  let released = false;
  return {
    path,
    async setAddress(address: string): Promise<void> {
      if (!released) await writeFile(path, serialise({ pid: process.pid, address, node, kind }));
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
      address: owner.address ?? null,
      node: owner.node ?? null,
      kind: owner.kind ?? null,
    }) + '\n'
  );
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
