// Keying: on a Redis queue with ordering = "key", giving the records that producers LPUSHed raw to its list
// (as Azafea's do) their key, with the handler's key(), before they can be claimed by key. One keyer at a
// time per queue (a lock with a time to live): it moves the oldest raw records to a staging list, runs key()
// over them here, and places them in their keys in the same order; a keyer that dies leaves them staged, and
// the next one places those first, so that nothing is lost or reordered.
import { randomInt } from 'node:crypto';

import { describeError } from '../errors.js';
import { asArray, asBuffer, asInteger } from '../redis/replies.js';
import { luaScript } from '../redis/script.js';
import type { QueueSettings } from './backend.js';
import { checkKey } from '../util/record-key.js';
import { checkRoles, keyedKeys, keyedLib, LINE_ROLES, lineKeys } from './redis-keyed-scripts.js';
import type { ScriptRunner } from './redis-scripts.js';
import { COMMON, errorKeys } from './redis-scripts.js';

/** Raw records one keying step takes at most. */
const KEYING_CHUNK = 2_000;
/** How long a keyer may hold the lock before another takes its staged records over. */
const KEYING_LOCK_MS = 10_000;

/**
 * KEYS: main list, staging list, keying lock. ARGV: token, lock time to live (ms), max. Takes the keying
 * lock (nil when another keyer holds it), then returns the staged records of a keyer that died before it
 * placed them, or else moves up to `max` of the oldest records of the main list to the staging list, in
 * order, and returns them.
 */
export const KEYING_TAKE = luaScript(`${COMMON}
${checkRoles(['list', 'list', 'counter'])}
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local staged = redis.call('LRANGE', KEYS[2], 0, -1)
if #staged > 0 then return staged end
local taken = redis.call('RPOP', KEYS[1], tonumber(ARGV[3]))
if not taken then
  redis.call('DEL', KEYS[3])
  return {}
end
for i = 1, #taken, 1000 do redis.call('RPUSH', KEYS[2], unpack(taken, i, math.min(i + 999, #taken))) end
return taken
`);

/**
 * KEYS: staging list, keying lock, the error keys, free list, lineKeys(). ARGV: token, now (ms), now (ISO),
 * how many records were taken, key_concurrency, then per staged record: 'k' and its key, 'f' and '' (no key), or 'e' and why
 * key() failed. Unless the lock is no longer this keyer's (its successor redoes the work): appends each
 * record to its key's tail, to the free list, or to the error queue, in staging order; empties the staging
 * list and frees the lock. Returns how many it placed; -1 when the lock was lost.
 */
export const KEYING_PLACE = luaScript(`${keyedLib(8)}
${checkRoles(['list', 'counter', 'list', 'list', 'hash', 'counter', 'list', ...LINE_ROLES])}
local n = tonumber(ARGV[4])
slots = tonumber(ARGV[5]) or 1
if redis.call('GET', KEYS[2]) ~= ARGV[1] or redis.call('LLEN', KEYS[1]) ~= n then return -1 end
local names = {}
for i = 6, #ARGV, 2 do if ARGV[i] == 'k' then table.insert(names, ARGV[i + 1]) end end
bad = check_lists(names)
if bad then return bad end
local staged, free, now = redis.call('LRANGE', KEYS[1], 0, -1), {}, tonumber(ARGV[2])
for r = 1, n do
  local kind, value = ARGV[4 + 2 * r], ARGV[5 + 2 * r]
  if kind == 'k' then append(value, envelope(0, '', staged[r]), now)
  elseif kind == 'f' then table.insert(free, staged[r])
  else to_errors(KEYS[3], KEYS[4], KEYS[5], KEYS[6], staged[r], 0, value, ARGV[3], ARGV[3]) end
end
for i = 1, #free, 1000 do redis.call('LPUSH', KEYS[7], unpack(free, i, math.min(i + 999, #free))) end
if #free > 0 then wake_up() end
redis.call('DEL', KEYS[1], KEYS[2])
finish()
return n
`);

/**
 * One keying step of an ordered queue whose list is `key`: takes the keying lock, the staged records of a
 * keyer that died (or else up to KEYING_CHUNK raw records of the list), keys them with `keyOf` and places
 * them (`slots`: key_concurrency). Returns how many it placed; 0 when another keyer holds the lock or nothing
 * waits.
 */
export async function keyRawRecords(
  run: ScriptRunner,
  queue: string,
  key: string,
  keyOf: NonNullable<QueueSettings['keyOf']>,
  slots: number,
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
  const args: Array<string | number> = [token, now.getTime(), now.toISOString(), records.length, slots];
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
