// Records with keys and idempotency ids on Redis (redis-keyed-scripts.ts has the layout and the scripts):
// the arguments the scripts take, and keying, which gives the records that producers LPUSHed raw to an
// ordered queue's list their key. Keying is one keyer at a time per queue (a lock with a time to live): it
// moves the oldest raw records to a staging list, runs the handler's key() over them here, and places them
// in their keys in the same order; a keyer that dies leaves them staged, and the next one places them first.
import { randomInt } from 'node:crypto';

import { describeError } from '../errors.js';
import { asArray, asBuffer, asInteger } from '../redis/replies.js';
import type { QueueSettings } from './backend.js';
import { delayAt } from './delay.js';
import type { RecordOptions } from './record-options.js';
import { checkKey } from './record-options.js';
import { valueAt } from '../util/per-record.js';
import {
  dedupKeys,
  KEYING_PLACE,
  KEYING_TAKE,
  keyedKeys,
  lineKeys,
  PUBLISH_RECORDS,
} from './redis-keyed-scripts.js';
import type { ScriptRunner } from './redis-scripts.js';
import { claimKeys, errorKeys, processingKey } from './redis-scripts.js';

/** Raw records one keying step takes at most. */
const KEYING_CHUNK = 2_000;
/** How long a keyer may hold the lock before another takes its staged records over. */
const KEYING_LOCK_MS = 10_000;

/**
 * Publishes through PUBLISH_RECORDS: records with ids (dedup, on every queue) or, on an ordered queue, with
 * keys or delays. Returns how many were dropped as duplicates.
 */
export async function publishRecords(
  run: ScriptRunner,
  key: string,
  records: readonly Buffer[],
  options: RecordOptions,
  settings: QueueSettings,
): Promise<number> {
  const ordered = settings.ordering === 'key';
  const dedup = dedupKeys(key);
  const idKeys: string[] = [];
  const idIndex = new Map<string, number>();
  // Scored by this node's clock, as claims compare them with the claiming node's (docs/delayed-records.md).
  const now = Date.now();
  const args: Array<string | number | Buffer> = [settings.dedupWindowMs, now, ordered ? '1' : '0'];
  records.forEach((record, index) => {
    const id = valueAt(options.ids, index);
    let position = '';
    if (id !== undefined) {
      const known = idIndex.get(id) ?? idKeys.push(dedup.id(id));
      idIndex.set(id, known);
      position = String(known);
    }
    const delay = delayAt(options.delays, index);
    const at = delay === undefined ? '' : 'delayMs' in delay ? now + delay.delayMs : delay.runAt.getTime();
    const recordKey = ordered ? (valueAt(options.keys, index) ?? '') : '';
    args.push(position, String(at), recordKey, record);
  });
  const keys = [key, `${key}:retry`, `${key}:retry:seq`, dedup.counter, ...lineKeys(key), ...idKeys];
  return asInteger(await run(PUBLISH_RECORDS, keys, args));
}

/** The KEYS of CLAIM_KEYED for a batch of `consumer` and the completed batches it frees. */
export function claimKeyedKeys(
  queue: string,
  key: string,
  consumer: string,
  batch: string,
  completed: readonly string[],
): string[] {
  const keyed = keyedKeys(key);
  return [
    ...claimKeys(queue, key, processingKey(key, consumer, batch)),
    keyed.free,
    ...lineKeys(key),
    keyed.staging,
    keyed.broken,
    ...completed.map((id) => processingKey(key, consumer, id)),
  ];
}

/** The KEYS of COMPLETE_KEYED and RECOVER_KEYED (as COMPLETE's and RECOVER's, then lineKeys()). */
export function settleKeyedKeys(
  queue: string,
  key: string,
  batch: { id: string; consumer: string },
): string[] {
  return [
    processingKey(key, batch.consumer, batch.id),
    `${key}:batches`,
    `${key}:retry`,
    `${key}:retry:seq`,
    ...errorKeys(queue),
    ...lineKeys(key),
  ];
}

/**
 * One keying step of an ordered queue whose list is `key`: takes the keying lock, the staged records of a
 * keyer that died (or else up to KEYING_CHUNK raw records of the list), keys them with `keyOf` and places
 * them. Returns how many it placed; 0 when another keyer holds the lock or nothing waits.
 */
export async function keyRawRecords(
  run: ScriptRunner,
  queue: string,
  key: string,
  keyOf: NonNullable<QueueSettings['keyOf']>,
): Promise<number> {
  const keyed = keyedKeys(key);
  const token = String(randomInt(1, 2 ** 47));
  const taken = await run(
    KEYING_TAKE,
    [key, keyed.staging, keyed.lock],
    [token, KEYING_LOCK_MS, KEYING_CHUNK],
  );
  if (taken === null) return 0;
  const records = asArray(taken).map(asBuffer);
  if (records.length === 0) return 0;
  const now = new Date();
  const args: Array<string | number> = [token, now.getTime(), now.toISOString(), records.length];
  for (const record of records) args.push(...keyingOf(keyOf, record));
  const keys = [keyed.staging, keyed.lock, ...errorKeys(queue), keyed.free, ...lineKeys(key)];
  // -1: the lock was lost (this process stalled past its time to live); the next keyer places them.
  return Math.max(0, asInteger(await run(KEYING_PLACE, keys, args)));
}

/** What KEYING_PLACE does with a record: 'k' and its key, 'f' (no key), or 'e' and why it has none. */
function keyingOf(keyOf: NonNullable<QueueSettings['keyOf']>, record: Buffer): [string, string] {
  let given: unknown;
  try {
    given = keyOf(record);
  } catch (error) {
    return ['e', `key() failed: ${describeError(error)}`];
  }
  if (given === undefined || given === null) return ['f', ''];
  try {
    return ['k', checkKey(given, 'key()')];
  } catch (error) {
    return ['e', `key() returned an unusable key: ${describeError(error)}`];
  }
}
