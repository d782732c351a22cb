// Tar archives (ustar, which GNU tar and PGlite read and write) of folders that hold only directories and
// regular files, as a PostgreSQL data folder does: packing one, and reading one as it streams in.
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

/**
 * The entries of an archive as it streams in (a gunzip stream, say): only the entry being read is held in
 * memory, never the whole archive.
 */
export async function* readTar(chunks: AsyncIterable<Buffer> | Iterable<Buffer>): AsyncGenerator<TarEntry> {
  const input = new ChunkReader(chunks);
  for (;;) {
    const header = await input.read(BLOCK);
    if (!header || header.every((byte) => byte === 0)) return;
    const size = octal(header, 124, 12);
    const type = String.fromCharCode(header[156] ?? 0);
    const ustar = text(header, 257, 5) === 'ustar';
    const prefix = ustar ? text(header, 345, 155) : '';
    const name = (prefix ? `${prefix}/` : '') + text(header, 0, 100);
    const data = await input.read(size + padding(size));
    if (!data) throw new Error(`tar archive: "${name}" is cut short`);
    const path = name.replace(/^(\.?\/)+/, '').replace(/\/+$/, '');
    if (path === '' || path.split('/').includes('..')) continue;
    const entry = { path, mode: octal(header, 100, 8), data: data.subarray(0, size) };
    if (type === '5') yield { ...entry, kind: 'directory' };
    else if (type === '0' || type === '\0') yield { ...entry, kind: 'file' };
    else throw new Error(`tar archive: "${name}" is of type "${type}", neither a file nor a directory`);
  }
}

/** Reads exact lengths from a stream of chunks, joining only the chunks each read spans. */
class ChunkReader {
  readonly #source: AsyncIterator<Buffer> | Iterator<Buffer>;
  #pending: Buffer[] = [];
  #length = 0;

  constructor(chunks: AsyncIterable<Buffer> | Iterable<Buffer>) {
    this.#source =
      Symbol.asyncIterator in chunks ? chunks[Symbol.asyncIterator]() : chunks[Symbol.iterator]();
  }

  /** The next `size` bytes; undefined when the stream ends first. */
  async read(size: number): Promise<Buffer | undefined> {
    while (this.#length < size) {
      const next = await this.#source.next();
      if (next.done) return undefined;
      this.#pending.push(next.value);
      this.#length += next.value.length;
    }
    const joined = this.#pending.length === 1 ? (this.#pending[0] as Buffer) : Buffer.concat(this.#pending);
    this.#pending = joined.length > size ? [joined.subarray(size)] : [];
    this.#length = joined.length - size;
    return joined.subarray(0, size);
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
    // By code unit, not by locale: the same folder packs to the same bytes anywhere.
    const entries = (await readdir(join(root, relative), { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
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
