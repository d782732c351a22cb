// A fresh embedded store with Baton's migrations, in a temp folder removed afterwards.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPgliteStore } from '../../src/store/pglite.js';
import type { Store } from '../../src/store/store.js';

export interface TempStore {
  readonly store: Store;
  readonly dir: string;
  dispose(): Promise<void>;
}

export async function openTempStore(): Promise<TempStore> {
  const dir = await mkdtemp(join(tmpdir(), 'baton-test-'));
  const store = await openPgliteStore(join(dir, 'store'));
  await applyMigrations(store, await builtinMigrations());
  return {
    store,
    dir,
    async dispose(): Promise<void> {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
