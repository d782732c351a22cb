// Reads records from a stream, one per line, in groups: records are bytes, so lines are split without
// decoding them.
import { splitLines } from '../util/lines.js';

export async function* readLineBatches(
  stream: NodeJS.ReadableStream,
  batchSize: number,
): AsyncGenerator<Buffer[]> {
  let carry: Buffer = Buffer.alloc(0);
  let batch: Buffer[] = [];
  for await (const chunk of stream) {
    const data: Buffer = carry.length > 0 ? Buffer.concat([carry, toBuffer(chunk)]) : toBuffer(chunk);
    const end = data.lastIndexOf(0x0a);
    if (end === -1) {
      carry = data;
      continue;
    }
    carry = Buffer.from(data.subarray(end + 1));
    for (const line of splitLines(data.subarray(0, end + 1))) {
      batch.push(Buffer.from(line));
      if (batch.length >= batchSize) {
        yield batch;
        batch = [];
      }
    }
  }
  batch.push(...splitLines(carry));
  if (batch.length > 0) yield batch;
}

function toBuffer(chunk: string | Buffer | Uint8Array): Buffer {
  return typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk);
}
