// What an ingest request says of its records: `Baton-Delay` or `Baton-Run-At` for all of them, `Baton-Key`
// (the key of all of them) and `Idempotency-Key` (the id of a single record; with several records, record n
// gets `<id>#n`, so that a request sent again carries the same ids). With `Baton-Envelope: json`, one JSON
// envelope per NDJSON line carries the record and its own delay, key and id. Without that header a line is
// the record itself, byte for byte, whatever it holds: a record can never be read as an envelope by accident.
import { z } from 'zod';

import { BadRequestError } from '../errors.js';
import type { Delay } from '../queue/delay.js';
import type { RecordOptions } from '../queue/record-options.js';
import { IDEMPOTENCY_HEADER, KEY_HEADER } from '../queue/record-options.js';
import { checkKey } from '../util/record-key.js';
import type { PerRecord } from '../util/per-record.js';
import { valueAt } from '../util/per-record.js';
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

/**
 * The records of a request body and what the request says of them; BadRequestError naming the header or line
 * at fault.
 */
export function readIngestBody(
  body: Buffer,
  headers: Headers,
  ndjson: boolean,
): { records: Buffer[]; options: RecordOptions } {
  const shared = requestDelay(headers);
  const key = optional(header(headers, KEY_HEADER), (value) => checkKey(value, 'Baton-Key'));
  const id = optional(header(headers, IDEMPOTENCY_HEADER), (value) => checkKey(value, 'Idempotency-Key'));
  const envelope = header(headers, ENVELOPE_HEADER);
  if (envelope === undefined) {
    const records = ndjson ? splitLines(body) : body.length > 0 ? [body] : [];
    return { records, options: defined({ delays: shared, keys: key, ids: requestIds(id, records.length) }) };
  }
  if (envelope.trim().toLowerCase() !== 'json') {
    throw new BadRequestError(`Baton-Envelope: the only form is "json", got "${envelope}"`);
  }
  if (!ndjson) throw new BadRequestError('Baton-Envelope: json needs Content-Type: application/x-ndjson');
  const records: Buffer[] = [];
  const delays: Array<Delay | undefined> = [];
  const keys: Array<string | undefined> = [];
  const ids: Array<string | undefined> = [];
  const lines = splitLines(body);
  lines.forEach((line, index) => {
    const read = readEnvelope(line, index + 1);
    records.push(read.record);
    delays.push(read.delay ?? shared);
    keys.push(read.key ?? key);
    ids.push(read.id ?? valueAt(requestIds(id, lines.length), index));
  });
  return { records, options: defined({ delays, keys, ids }) };
}

/** The ids `Idempotency-Key` gives a request of `count` records: the id itself for one, `<id>#n` for several. */
function requestIds(id: string | undefined, count: number): PerRecord<string> | undefined {
  if (id === undefined) return undefined;
  return count === 1 ? id : Array.from({ length: count }, (_, index) => `${id}#${index + 1}`);
}

function optional<T>(value: string | undefined, check: (value: string) => T): T | undefined {
  return value === undefined ? undefined : check(value);
}

/** The options without their undefined parts (a list of only undefined values counts as none). */
function defined(options: RecordOptions): RecordOptions {
  return Object.fromEntries(
    Object.entries(options).filter(([, value]) =>
      Array.isArray(value) ? value.some((item) => item !== undefined) : value !== undefined,
    ),
  );
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
    key: z.string().optional(),
    id: z.string().optional(),
  })
  .refine((line) => (line.record === undefined) !== (line.record_base64 === undefined), {
    error: 'give the record as "record" (text) or "record_base64" (bytes), one of them',
  });

/** One envelope line: `{"record": "…"}` or `{"record_base64": "…"}`, with `delay_ms` or `run_at`, `key`, `id`. */
function readEnvelope(
  line: Buffer,
  number: number,
): { record: Buffer; delay: Delay | undefined; key: string | undefined; id: string | undefined } {
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
  const key = optional(envelope.key, (value) => checkKey(value, `${where}: key`));
  const id = optional(envelope.id, (value) => checkKey(value, `${where}: id`));
  return { record, delay, key, id };
}
