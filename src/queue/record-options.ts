// What a publish may say of its records beyond their bytes: when each may first run (delay.ts), the key
// that orders it among the records of its key (docs/keys.md), and the idempotency id that drops a second
// record with the same id within the queue's dedup window. Each is given once for all the records of a
// publish, or once per record.
import { BadRequestError } from '../errors.js';
import type { PerRecord } from '../util/per-record.js';
import type { Delay, PublishOptions } from './delay.js';
import { checkDelay } from './delay.js';
import { checkKey } from '../util/record-key.js';

/** What a publish says of its records, each part checked already (checkDelay, checkKey, checkRecordId). */
export interface RecordOptions {
  /** When each record may first run; absent: at once. */
  readonly delays?: PerRecord<Delay> | undefined;
  /** The key of each record (ordering = "key" keeps each key's records in publish order). */
  readonly keys?: PerRecord<string> | undefined;
  /** The idempotency id of each record: a second record with the same id within the dedup window is dropped. */
  readonly ids?: PerRecord<string> | undefined;
}

/** HTTP ingest: the key of every record of the request. */
export const KEY_HEADER = 'baton-key';
/** HTTP ingest: the idempotency id of the request's record (record n of several: `<id>#n`, from 1). */
export const IDEMPOTENCY_HEADER = 'idempotency-key';

/** A checked value for every record, or the one given for all: see checkKey. */
export function checkPerRecord(
  values: PerRecord<string> | undefined,
  count: number,
  name: string,
): PerRecord<string> | undefined {
  if (values === undefined) return undefined;
  if (!Array.isArray(values)) return checkKey(values, name);
  const list = values as readonly (string | undefined)[];
  if (list.length !== count) {
    throw new BadRequestError(`${name}: expected one per record (${count}), got ${list.length}`);
  }
  return list.map((value, index) => (value === undefined ? undefined : checkKey(value, `${name}[${index}]`)));
}

/**
 * What a caller of publish gave (`{ delayMs | runAt, key, ids }`), checked for `count` records:
 * BadRequestError naming the option at fault. `names` are the caller's words for the delay options.
 */
export function toRecordOptions(
  options: PublishOptions | undefined,
  count: number,
  names?: { delay: string; at: string; key: string; ids: string },
): RecordOptions {
  const delay = checkDelay(options, names);
  const key = options?.key === undefined ? undefined : checkKey(options.key, names?.key ?? 'key');
  const ids = checkPerRecord(options?.ids, count, names?.ids ?? 'ids');
  return {
    ...(delay ? { delays: delay } : {}),
    ...(key === undefined ? {} : { keys: key }),
    ...(ids === undefined ? {} : { ids }),
  };
}
