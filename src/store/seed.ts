// A new embedded store starts from the seed: the data folder of an empty cluster, as PGlite leaves it after
// its initdb and a clean close, packed when Baton is built (scripts/make-store-seed.js). Unpacking it takes
// a fraction of a second and little memory, where PGlite's initdb takes ten seconds or more and close to
// 1 GB. The seed holds no table of Baton's: migrations create them, as on any new store. It is used only
// with the PGlite version that made it; otherwise, or when it was not built, PGlite runs initdb itself.
import { createReadStream, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createGunzip, gzip } from 'node:zlib';

import { PGlite } from '@electric-sql/pglite';

import { packFolder, readTar } from '../util/tar.js';

/**
 * Where the build writes the seeds: dist/store/seed/ of the package, two folders above this module whether
 * it runs compiled (dist/store/) or from its source (src/store/).
 */
export const SEED_DIR = fileURLToPath(new URL('../../dist/store/seed/', import.meta.url));

/** The seed's file name for a PGlite version. */
export function seedFileName(pgliteVersion: string): string {
  return `pglite-${pgliteVersion}.tar.gz`;
}

/** The version of the PGlite package that `import '@electric-sql/pglite'` loads here. */
export async function installedPgliteVersion(): Promise<string | undefined> {
  try {
    const entry = import.meta.resolve('@electric-sql/pglite');
    const parsed: unknown = JSON.parse(await readFile(new URL('../package.json', entry), 'utf8'));
    const version =
      typeof parsed === 'object' && parsed !== null && 'version' in parsed ? parsed.version : undefined;
    return typeof version === 'string' ? version : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Fills `path`, a folder that is empty or absent, from the seed of the installed PGlite. The seed is
 * unpacked beside `path` and moved into it, PG_VERSION last, so an interrupted unpacking never leaves what
 * PGlite would open as a cluster. Returns false, leaving `path` as it was, when `path` is not empty or there
 * is no seed for this PGlite version.
 */
export async function seedStore(path: string): Promise<boolean> {
  const entries = await readdir(path).catch(() => undefined);
  if (entries && entries.length > 0) return false;
  const version = await installedPgliteVersion();
  if (version === undefined) return false;
  const seed = join(SEED_DIR, seedFileName(version));
  if (!existsSync(seed)) return false;

  const staging = `${path}.seeding-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  try {
    // Synchronous writes: a thousand small files go faster without a trip through the thread pool each, and
    // nothing else runs yet while a store opens.
    mkdirSync(staging, { recursive: true, mode: 0o700 });
    for await (const entry of readTar(createReadStream(seed).pipe(createGunzip()))) {
      const target = join(staging, entry.path);
      if (entry.kind === 'directory') {
        mkdirSync(target, { recursive: true, mode: 0o700 });
      } else {
        mkdirSync(dirname(target), { recursive: true, mode: 0o700 });
        writeFileSync(target, entry.data, { mode: entry.mode & 0o777 || 0o600 });
      }
    }
    // Into place, PG_VERSION last: PGlite takes a folder with PG_VERSION for a cluster to open.
    await mkdir(path, { recursive: true, mode: 0o700 });
    const unpacked = (await readdir(staging)).sort(
      (a, b) => Number(a === VERSION_FILE) - Number(b === VERSION_FILE),
    );
    for (const name of unpacked) await rename(join(staging, name), join(path, name));
    return true;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** The file whose presence tells PGlite that a folder holds a cluster. */
const VERSION_FILE = 'PG_VERSION';

/**
 * Makes the seed of the installed PGlite in SEED_DIR, unless it is there already, and removes the seeds of
 * other versions. Returns the seed's path, and whether it was made now.
 */
export async function makeSeed(): Promise<{ path: string; made: boolean }> {
  const version = await installedPgliteVersion();
  if (version === undefined) throw new Error('cannot read the version of @electric-sql/pglite');
  const name = seedFileName(version);
  const path = join(SEED_DIR, name);
  const made = !(await stat(path).catch(() => undefined));
  if (made) {
    const scratch = await mkdtemp(join(os.tmpdir(), 'baton-seed-'));
    try {
      const cluster = join(scratch, 'store');
      await (await PGlite.create(cluster)).close();
      const packed = await promisify(gzip)(await packFolder(cluster), { level: 9 });
      await mkdir(SEED_DIR, { recursive: true });
      await writeFile(`${path}.${process.pid}.tmp`, packed);
      await rename(`${path}.${process.pid}.tmp`, path);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }
  for (const other of await readdir(SEED_DIR)) {
    if (other !== name) await rm(join(SEED_DIR, other), { force: true });
  }
  return { path, made };
}
