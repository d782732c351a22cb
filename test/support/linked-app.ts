// An application folder outside the repository whose dependencies are this repository's: `baton-runtime`
// is the repository itself (its build), the others the very packages it uses. What `npm install` would give
// the application, without the network, so that tsc and `baton` resolve its imports as they would there.
import { mkdir, symlink } from 'node:fs/promises';
import path from 'node:path';

import { REPO_ROOT } from './process.js';

/** Links `node_modules/<name>` in `dir` for baton-runtime and each of `names` (from the repository's). */
export async function linkRepoPackages(dir: string, names: readonly string[]): Promise<void> {
  await mkdir(path.join(dir, 'node_modules'), { recursive: true });
  await symlink(REPO_ROOT, path.join(dir, 'node_modules/baton-runtime'), 'dir');
  for (const name of names) {
    const target = path.join(dir, 'node_modules', name);
    await mkdir(path.dirname(target), { recursive: true });
    await symlink(path.join(REPO_ROOT, 'node_modules', name), target, 'dir');
  }
}

/** Arguments of `process.execPath` that run the repository's tsc on the project of `dir`. */
export function tscArgs(dir: string): string[] {
  return [path.join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '--noEmit', '-p', dir];
}
