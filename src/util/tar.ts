// Tar archives (ustar, which GNU tar and PGlite read and write) of folders that hold only directories and
// regular files, as a PostgreSQL data folder does: packing one, and reading one held in memory.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

export interface TarEntry {
  /** Path inside the archive, without a leading "/" or "./". */
  readonly path: string;
  readonly kind: 'file' | 'directory';
  readonly mode: number;
  readonly data: Uint8Array;
}

const BLOCK = 512;

export function* readTar(archive: Uint8Array): Generator<TarEntry> {
  let offset = 0;
  while (offset + BLOCK <= archive.length) {
    const header = archive.subarray(offset, offset + BLOCK);
    if (header.every((byte) => byte === 0)) return;
    const size = octal(header, 124, 12);
    const type = String.fromCharCode(header[156] ?? 0);
    const ustar = text(header, 257, 5) === 'ustar';
    const prefix = ustar ? text(header, 345, 155) : '';
    const name = (prefix ? `${prefix}/` : '') + text(header, 0, 100);
    const path = name.replace(/^(\.?\/)+/, '').replace(/\/+$/, '');
    const data = archive.subarray(offset + BLOCK, offset + BLOCK + size);
    if (data.length < size) throw new Error(`tar archive: "${name}" is cut short`);
    offset += BLOCK + size + padding(size);
    if (path === '' || path.split('/').includes('..')) continue;
    if (type === '5') yield { path, kind: 'directory', mode: octal(header, 100, 8), data };
    else if (type === '0' || type === '\0') yield { path, kind: 'file', mode: octal(header, 100, 8), data };
    else throw new Error(`tar archive: "${name}" is of type "${type}", neither a file nor a directory`);
  }
}

function text(header: Uint8Array, start: number, length: number): string {
  const field = header.subarray(start, start + length);
  const end = field.indexOf(0);
  return Buffer.from(end === -1 ? field : field.subarray(0, end)).toString('utf8');
}

function octal(header: Uint8Array, start: number, length: number): number {
  const value = text(header, start, length).trim();
  return value === '' ? 0 : parseInt(value, 8);
}

/** A folder as a ustar archive: its directories and regular files, with paths relative to it, sorted. */
export async function packFolder(root: string): Promise<Buffer> {
  const blocks: Buffer[] = [];
  const walk = async (relative: string): Promise<void> => {
    const entries = (await readdir(join(root, relative), { withFileTypes: true })).sort((a, b) =>
      a.name.localeCompare(b.name),
    );
    for (const entry of entries) {
      const path = relative ? `${relative}/${entry.name}` : entry.name;
      const info = await stat(join(root, path));
      if (entry.isDirectory()) {
        blocks.push(header(`${path}/`, info.mode, 0, '5'));
        await walk(path);
      } else if (entry.isFile()) {
        const data = await readFile(join(root, path));
        blocks.push(header(path, info.mode, data.length, '0'), data, Buffer.alloc(padding(data.length)));
      } else {
        throw new Error(
          `${join(root, path)}: neither a file nor a directory, which a tar archive here holds`,
        );
      }
    }
  };
  await walk('');
  blocks.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(blocks);
}

function header(path: string, mode: number, size: number, type: '0' | '5'): Buffer {
  if (Buffer.byteLength(path) > 100) throw new Error(`${path}: longer than a tar header holds`);
  const block = Buffer.alloc(BLOCK);
  const field = (start: number, length: number, value: string): number =>
    block.write(value, start, length, 'utf8');
  const number = (start: number, length: number, value: number): number =>
    field(start, length, `${value.toString(8).padStart(length - 1, '0')}\0`);
  field(0, 100, path);
  number(100, 8, mode & 0o7777);
  number(108, 8, 0); // uid
  number(116, 8, 0); // gid
  number(124, 12, size);
  number(136, 12, 0); // mtime
  field(148, 8, ' '.repeat(8)); // the checksum counts its own field as spaces
  field(156, 1, type);
  field(257, 8, 'ustar\u000000');
  const sum = block.reduce((total, byte) => total + byte, 0);
  field(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return block;
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}
