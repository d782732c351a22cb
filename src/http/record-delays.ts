// The delays of an ingest request: `Baton-Delay` or `Baton-Run-At` for all its records, and with
// `Baton-Envelope: json` one JSON envelope per NDJSON line carrying the record and its own delay. Without
// that header a line is the record itself, byte for byte, whatever it holds: a record can never be read as
// an envelope by accident.
import { z } from 'zod';

import { BadRequestError } from '../errors.js';
import type { Delay, RecordDelays } from '../queue/delay.js';
import {
  checkDelay,
  DELAY_HEADER,
  ENVELOPE_HEADER,
  parseDuration,
  parseTime,
  RUN_AT_HEADER,
} from '../queue/delay.js';
import { splitLines } from '../util/lines.js';
import { invalidUtf8Offset, parseInput } from './validate.js';

type Headers = Readonly<Record<string, string | string[] | undefined>>;

/** The records of a request body and their delays; BadRequestError naming the header or line at fault. */
export function readIngestBody(
  body: Buffer,
  headers: Headers,
  ndjson: boolean,
): { records: Buffer[]; delays: RecordDelays | undefined } {
  const shared = requestDelay(headers);
  const envelope = header(headers, ENVELOPE_HEADER);
  if (envelope === undefined) {
    const records = ndjson ? splitLines(body) : body.length > 0 ? [body] : [];
    return { records, delays: shared };
  }
  if (envelope.trim().toLowerCase() !== 'json') {
    throw new BadRequestError(`Baton-Envelope: the only form is "json", got "${envelope}"`);
  }
  if (!ndjson) throw new BadRequestError('Baton-Envelope: json needs Content-Type: application/x-ndjson');
  const records: Buffer[] = [];
  const delays: Array<Delay | undefined> = [];
  splitLines(body).forEach((line, index) => {
    const { record, delay } = readEnvelope(line, index + 1);
    records.push(record);
    delays.push(delay ?? shared);
  });
  return { records, delays };
}

/** The delay that `Baton-Delay` or `Baton-Run-At` gives every record of the request (undefined: none). */
function requestDelay(headers: Headers): Delay | undefined {
  const delay = header(headers, DELAY_HEADER);
  const at = header(headers, RUN_AT_HEADER);
  return checkDelay(
    {
      delayMs: delay === undefined ? undefined : parseDuration(delay, 'Baton-Delay'),
      runAt: at === undefined ? undefined : parseTime(at, 'Baton-Run-At'),
    },
    { delay: 'Baton-Delay', at: 'Baton-Run-At' },
  );
}

function header(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  if (Array.isArray(value)) throw new BadRequestError(`${name}: given ${value.length} times; give it once`);
  return value;
}

const envelopeSchema = z
  .strictObject({
    record: z.string().optional(),
    record_base64: z.base64().optional(),
    delay_ms: z.number().optional(),
    run_at: z.string().optional(),
  })
  .refine((line) => (line.record === undefined) !== (line.record_base64 === undefined), {
    error: 'give the record as "record" (text) or "record_base64" (bytes), one of them',
  });

/** One envelope line: `{"record": "…"}` or `{"record_base64": "…"}`, with `delay_ms` or `run_at`. */
function readEnvelope(line: Buffer, number: number): { record: Buffer; delay: Delay | undefined } {
  const where = `line ${number}`;
  if (invalidUtf8Offset(line) !== undefined) throw new BadRequestError(`${where}: not valid UTF-8`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(line.toString('utf8'));
  } catch {
    throw new BadRequestError(`${where}: not a JSON envelope (Baton-Envelope: json)`);
  }
  const envelope = parseInput(envelopeSchema, parsed, where);
  const record =
    envelope.record === undefined
      ? Buffer.from(envelope.record_base64 ?? '', 'base64')
      : Buffer.from(envelope.record, 'utf8');
  const delay = checkDelay(
    {
      delayMs: envelope.delay_ms,
      runAt: envelope.run_at === undefined ? undefined : parseTime(envelope.run_at, `${where}: run_at`),
    },
    { delay: `${where}: delay_ms`, at: `${where}: run_at` },
  );
  return { record, delay };
}
