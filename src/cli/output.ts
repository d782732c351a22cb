// Terminal output: aligned tables, and a progress bar that falls back to plain lines when the output is
// not a terminal.
import type { QueueInfo } from '../queue/backend.js';

export function formatTable(columns: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  // A loop, not Math.max(...cells): a result of a few hundred thousand rows would overflow the call stack.
  const widths = columns.map((column, index) => {
    let width = column.length;
    for (const row of rows) width = Math.max(width, (row[index] ?? '').length);
    return Math.min(80, width);
  });
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, index) => clip(cell, widths[index] ?? 0).padEnd(widths[index] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(columns), line(widths.map((width) => '-'.repeat(width))), ...rows.map(line)].join('\n');
}

/** The per-queue figures as a table (`queues`, `status`). */
export function queuesTable(queues: readonly QueueInfo[]): string {
  const dash = (value: number | undefined): string => (value === undefined ? '-' : String(value));
  return formatTable(
    ['queue', 'backend', 'depth', 'delayed', 'in flight', 'processed', 'failed', 'errors', 'deduplicated'],
    queues.map((q) => [
      q.name,
      q.backend,
      String(q.depth),
      q.delayedCapped === true ? `${q.delayed}+` : String(q.delayed),
      String(q.inFlight),
      dash(q.processed),
      dash(q.failed),
      String(q.errors),
      String(q.deduplicated ?? 0),
    ]),
  );
}

export function cellText(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Uint8Array) return `\\x${Buffer.from(value).toString('hex')}`;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return value.toString();
  return JSON.stringify(value) ?? '';
}

function clip(text: string, width: number): string {
  const flat = text.replace(/\s+/g, ' ');
  return flat.length > width ? `${flat.slice(0, width - 1)}…` : flat;
}

export interface Progress {
  update(done: number): void;
  finish(): void;
}

/** A progress bar on a terminal; on a pipe, a plain line every 10 % or so. */
export function progressBar(
  stream: NodeJS.WritableStream & { isTTY?: boolean },
  label: string,
  total: number,
): Progress {
  let lastStep = -1;
  const render = (done: number): void => {
    const ratio = total > 0 ? Math.min(1, done / total) : 1;
    if (stream.isTTY) {
      const width = 30;
      const filled = Math.round(ratio * width);
      stream.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`);
      return;
    }
    const step = Math.floor(ratio * 10);
    if (step !== lastStep) {
      lastStep = step;
      stream.write(`${label}: ${done}/${total}\n`);
    }
  };
  return {
    update: render,
    finish(): void {
      if (stream.isTTY) stream.write('\n');
    },
  };
}

/** Text of a record for a listing: as it is when printable UTF-8, else base64 marked as such. */
export function recordPreview(payload: Buffer): string {
  const text = payload.toString('utf8');
  const printable = Buffer.from(text, 'utf8').equals(payload) && !hasControlCharacters(text);
  return printable ? text : `base64:${payload.toString('base64')}`;
}

function hasControlCharacters(text: string): boolean {
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if ((code < 0x20 && code !== 0x09 && code !== 0x0a && code !== 0x0d) || code === 0x7f) return true;
  }
  return false;
}
