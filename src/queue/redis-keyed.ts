// Publishing records with keys and idempotency ids to Redis (the keys' layout is in redis-keyed-scripts.ts),
// and the keys the scripts of ordered queues take. A publish with ids, on any Redis queue, remembers each id
// under `<list>:dedup:<id>` for the dedup window, in the same script that stores the records.
import { asInteger } from '../redis/replies.js';
import type { QueueSettings } from './backend.js';
import { delayAt } from './delay.js';
import type { RecordOptions } from './record-options.js';
import { valueAt } from '../util/per-record.js';
import { luaScript } from '../redis/script.js';
import {
  checkRoles,
  dedupKeys,
  keyedKeys,
  keyedLib,
  keySlots,
  LINE_ROLES,
  lineKeys,
} from './redis-keyed-scripts.js';
import type { ScriptRunner } from './redis-scripts.js';
import { claimKeys, errorKeys, processingKey } from './redis-scripts.js';

/**
 * KEYS: main list, retry ZSET, retry seq, dedup counter, lineKeys(), then the key remembering each id given.
 * ARGV: dedup window (ms), now (ms), ordered ('1'/'0'), key_concurrency, then per record: the index of its id's key among
 * those ('' for none), run at (ms, or ''), key ('' for none), payload. A record whose id is remembered
 * already (or given earlier in the same publish) is dropped and counted; the others are stored: keyed ones
 * (ordered queues only) at their key's tail, delayed unkeyed ones in the retry ZSET, the rest raw on the main
 * list. Returns how many were dropped.
 */
export const PUBLISH_RECORDS = luaScript(`${keyedLib(5)}
${checkRoles(['list', 'zset', 'counter', 'counter', ...LINE_ROLES])}
slots = tonumber(ARGV[4]) or 1
local records = {}
for i = 5, #ARGV, 4 do table.insert(records, ARGV[i + 2]) end
bad = check_lists(records)
if bad then return bad end
local now, raw, dropped = tonumber(ARGV[2]), {}, 0
for i = 5, #ARGV, 4 do
  local id = ARGV[i]
  if id ~= '' and not redis.call('SET', KEYS[10 + tonumber(id)], '1', 'NX', 'PX', ARGV[1]) then
    dropped = dropped + 1
  elseif ARGV[i + 2] ~= '' then append(ARGV[i + 2], envelope(0, ARGV[i + 1], ARGV[i + 3]), now)
  elseif ARGV[i + 1] ~= '' then to_retry(KEYS[2], KEYS[3], ARGV[i + 1], 0, ARGV[i + 3])
  else table.insert(raw, ARGV[i + 3]) end
end
for i = 1, #raw, 1000 do redis.call('LPUSH', KEYS[1], unpack(raw, i, math.min(i + 999, #raw))) end
if #raw > 0 and ARGV[3] == '1' then wake_up() end
if dropped > 0 then redis.call('INCRBY', KEYS[4], dropped) end
finish()
return dropped
`);

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
  const args: Array<string | number | Buffer> = [
    settings.dedupWindowMs,
    now,
    ordered ? '1' : '0',
    keySlots(settings),
  ];
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
    keyed.retry,
    ...completed.map((id) => processingKey(key, consumer, id)),
  ];
}

/**
 * The KEYS of COMPLETE_KEYED and RECOVER_KEYED (as COMPLETE's and RECOVER's, then lineKeys() and the keyed
 * retries).
 */
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
    keyedKeys(key).retry,
  ];
}
