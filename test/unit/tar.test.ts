// Tar archives of data folders: what packFolder writes, readTar reads back, and GNU tar reads too.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import type { TarEntry } from '../../src/util/tar.js';
import { packFolder, readTar } from '../../src/util/tar.js';

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('packFolder and readTar', () => {
  it('give back the directories and files, bytes and modes as they were', async () => {
    dir = await mkdtemp(join(tmpdir(), 'baton-tar-'));
    await mkdir(join(dir, 'base', '1'), { recursive: true });
    await mkdir(join(dir, 'empty'));
    await writeFile(join(dir, 'PG_VERSION'), '18\n', { mode: 0o600 });
    await writeFile(join(dir, 'base', '1', 'exactly-512'), Buffer.alloc(512, 7));
    await writeFile(join(dir, 'base', '1', 'binary'), Buffer.from([0, 255, 1, 254, 0]));

    const archive = await packFolder(dir);
    const entries = (await collect(readTar([archive]))).map((entry) => ({
      path: entry.path,
      kind: entry.kind,
      data: Buffer.from(entry.data),
      mode: entry.mode,
    }));
    expect(entries.map((entry) => `${entry.kind} ${entry.path}`)).toEqual([
      'file PG_VERSION',
      'directory base',
      'directory base/1',
      'file base/1/binary',
      'file base/1/exactly-512',
      'directory empty',
    ]);
    expect(entries[0]).toMatchObject({ data: Buffer.from('18\n'), mode: 0o600 });
    expect(entries[3]?.data).toEqual(Buffer.from([0, 255, 1, 254, 0]));
    expect(entries[4]?.data).toEqual(Buffer.alloc(512, 7));

    // The headers' checksums are right: GNU tar lists the archive without complaint.
    const archivePath = join(dir, '..', `${dir.split('/').pop() ?? 'x'}.tar`);
    await writeFile(archivePath, archive);
    try {
      const listed = execFileSync('tar', ['tf', archivePath], { encoding: 'utf8' });
      expect(listed.trim().split('\n')).toContain('base/1/binary');
    } finally {
      await rm(archivePath, { force: true });
    }
  });

  it('reads an archive that streams in small chunks', async () => {
    dir = await mkdtemp(join(tmpdir(), 'baton-tar-'));
    await writeFile(join(dir, 'wal'), Buffer.alloc(5000, 3));
    await writeFile(join(dir, 'small'), 'x');
    const archive = await packFolder(dir);
    const chunks = Array.from({ length: Math.ceil(archive.length / 700) }, (_, index) =>
      archive.subarray(index * 700, (index + 1) * 700),
    );
    const entries = await collect(readTar(chunks));
    expect(entries.map((entry) => [entry.path, Buffer.from(entry.data)])).toEqual([
      ['small', Buffer.from('x')],
      ['wal', Buffer.alloc(5000, 3)],
    ]);
  });

  it('refuses an archive cut short', async () => {
    dir = await mkdtemp(join(tmpdir(), 'baton-tar-'));
    await writeFile(join(dir, 'big'), Buffer.alloc(4096, 1));
    const archive = await packFolder(dir);
    await expect(collect(readTar([archive.subarray(0, 1024)]))).rejects.toThrow(/cut short/);
  });
});

async function collect(entries: AsyncIterable<TarEntry>): Promise<TarEntry[]> {
  const all: TarEntry[] = [];
  for await (const entry of entries) all.push(entry);
  return all;
}
