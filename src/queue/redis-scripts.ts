// The Redis side of the Redis queue backend: its key layout, its Lua scripts (each atomic on the server, run
// with src/redis/script.ts) and the error-queue operations built on them. A claimed batch is one value under
// its processing key (redis-batch.ts); members of the retry ZSET are `<seq>:<attempts>:<payload>` (the
// sequence number keeps equal payloads apart and orders equal scores); `errors-<queue>` holds raw payloads,
// as Azafea does. Each script checks the type of every key of its queue before it writes (KEY_CHECKS): a
// key of the wrong type fails it whole, and the records stay where they were.
import { randomUUID } from 'node:crypto';

import type { Redis } from 'ioredis';
import { z } from 'zod';

import { isUnavailable, redisError } from '../redis/connection-errors.js';
import type { KeyRole } from '../redis/key-types.js';
import { KEY_CHECKS } from '../redis/key-types.js';
import { asArray, asBuffer, asInteger, asText } from '../redis/replies.js';
import type { LuaScript } from '../redis/script.js';
import { luaScript } from '../redis/script.js';
import type { ErrorPage, ErrorRecord } from './backend.js';
import { errorQueueName } from './backend.js';

export function consumerKey(consumer: string): string {
  return `baton:consumer:${consumer}`;
}

export function processingKey(key: string, consumer: string, batch: string): string {
  return `${key}:processing:${consumer}:${batch}`;
}

/** Batch ids are UUIDs: a key under the processing prefix that ends otherwise is none of Baton's. */
const BATCH_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The batches that have a processing key under the list `key` (consumer and batch id parsed from the key;
 * batch ids hold no colon). SCAN: the keyspace is walked in steps, so the answer may miss keys made meanwhile.
 */
export async function scanProcessingKeys(
  client: Redis,
  key: string,
): Promise<Array<{ id: string; consumer: string }>> {
  const prefix = `${key}:processing:`;
  const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
  const found: Array<{ id: string; consumer: string }> = [];
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    for (const name of keys) {
      const rest = name.slice(prefix.length);
      const colon = rest.lastIndexOf(':');
      const id = rest.slice(colon + 1);
      if (colon > 0 && BATCH_ID.test(id)) found.push({ consumer: rest.slice(0, colon), id });
    }
    cursor = next;
  } while (cursor !== '0');
  return found;
}

/** Processing list, batches hash, retry ZSET and its sequence, of a batch of the list `key`. */
export function batchKeys(
  key: string,
  batch: { id: string; consumer: string },
): [string, string, string, string] {
  return [processingKey(key, batch.consumer, batch.id), `${key}:batches`, `${key}:retry`, `${key}:retry:seq`];
}

/** The raw list Azafea's tools read, the parallel ids list, the metadata hash and the id sequence. */
export function errorKeys(queue: string): string[] {
  const errors = errorQueueName(queue);
  return [errors, `${errors}:ids`, `${errors}:meta`, `${errors}:seq`];
}

/** The role of each of errorKeys(). */
const ERROR_ROLES: readonly KeyRole[] = ['list', 'list', 'hash', 'counter'];

/**
 * The keys of a queue whose list is `key`, each with its role (what the scripts check): the list, the retry
 * ZSET and its sequence, the batches hash, and errorKeys(queue).
 */
export function queueKeys(queue: string, key: string): Array<{ key: string; role: KeyRole }> {
  const own: Array<[string, KeyRole]> = [
    [key, 'list'],
    [`${key}:retry`, 'zset'],
    [`${key}:retry:seq`, 'counter'],
    [`${key}:batches`, 'hash'],
  ];
  const errors = errorKeys(queue).map((name, index): [string, KeyRole] => [name, ERROR_ROLES[index]!]);
  return [...own, ...errors].map(([name, role]) => ({ key: name, role }));
}

/** The keys CLAIM takes before those of the completed batches it frees (see CLAIM). */
export function claimKeys(queue: string, key: string, processing: string): string[] {
  return [key, `${key}:retry`, `${key}:batches`, processing, `${key}:retry:seq`, ...errorKeys(queue)];
}

/** Runs a script: src/redis/script.ts's runScript, or the backend's wrapper of it. */
export type ScriptRunner = (
  script: LuaScript,
  keys: readonly string[],
  args: ReadonlyArray<string | Buffer | number>,
) => Promise<unknown>;

/** Lua functions every queue script starts with. */
export const COMMON = `${KEY_CHECKS}
-- The acknowledged indexes from ARGV[from]: '1' (the whole batch), or '0', a count and the 0-based indexes.
-- Returns whether the whole batch, a set of the 1-based indexes, and where the next argument is.
local function acked(from)
  if ARGV[from] == '1' then return true, {}, from + 2 end
  local set, n = {}, tonumber(ARGV[from + 1])
  for i = from + 2, from + 1 + n do set[tonumber(ARGV[i]) + 1] = true end
  return false, set, from + 2 + n
end
local function parse(envelope)
  local colon = string.find(envelope, ':', 1, true)
  return tonumber(string.sub(envelope, 1, colon - 1)), string.sub(envelope, colon + 1)
end
-- A claimed batch: its payloads and their attempts (-1: given back). A processing list of envelopes (kept by
-- earlier versions; '' given back) reads the same. Returns nil (before anything is written) for a value
-- that is not a batch.
local function load_batch(key)
  local payloads, attempts = {}, {}
  if redis.call('TYPE', key).ok == 'list' then
    for i, envelope in ipairs(redis.call('LRANGE', key, 0, -1)) do
      if envelope == '' then payloads[i], attempts[i] = '', -1 else attempts[i], payloads[i] = parse(envelope) end
    end
    return payloads, attempts
  end
  local value = redis.call('GET', key)
  if not value then return payloads, attempts end
  local ok, loaded, tries = pcall(cmsgpack.unpack, value)
  if ok and type(loaded) == 'table' and type(tries) == 'table' and #loaded == #tries then return loaded, tries end
  return nil
end
local function to_retry(retry, seq, score, attempts, payload)
  local n = redis.call('INCR', seq)
  redis.call('ZADD', retry, score, string.format('%016d', n) .. ':' .. attempts .. ':' .. payload)
end
-- Keeps the ids list parallel to errors-<queue> when another program (Azafea's replay-errors pops the
-- oldest from the right; an Azafea consumer pushes the newest on the left) changed the raw list.
local function align(errors, ids, meta, seq, now)
  local extra = redis.call('LLEN', ids) - redis.call('LLEN', errors)
  for _ = 1, extra do redis.call('HDEL', meta, redis.call('RPOP', ids)) end
  for _ = 1, -extra do
    local id = redis.call('INCR', seq)
    redis.call('LPUSH', ids, id)
    redis.call('HSET', meta, id, cjson.encode({attempts = 0, error = 'added to ' .. errors .. ' by another program',
      failed_at = now, enqueued_at = now}))
  end
end
-- Returns the record's id in the error queue.
local function to_errors(errors, ids, meta, seq, payload, attempts, err, failed_at, enqueued_at)
  align(errors, ids, meta, seq, failed_at)
  local id = redis.call('INCR', seq)
  redis.call('LPUSH', errors, payload)
  redis.call('LPUSH', ids, id)
  redis.call('HSET', meta, id, cjson.encode({attempts = attempts, error = err, failed_at = failed_at,
    enqueued_at = enqueued_at}))
  return id
end
`;

/**
 * KEYS: claimKeys() (main list, retry ZSET, batches hash, the batch's key, retry seq, the error keys), then
 * the keys of completed batches to free. ARGV: max, now (ms), consumer, batch id, then the ids of those
 * completed batches. Frees the completed batches (their records are all acknowledged), then takes due
 * retries and the oldest records of the main list into the batch, kept as one value (see redis-batch.ts;
 * max 0: only frees). Returns how many completed batches were gone (recovered), then that value, unless
 * nothing was claimed. Claims nothing while any key of the queue has the wrong type, even one this script
 * does not write: a batch that could not be settled would only wait in its processing key.
 */
export const CLAIM = luaScript(`${COMMON}
local bad = check({'list', 'zset', 'hash', '', 'counter', 'list', 'list', 'hash', 'counter'})
if bad then return bad end
local gone = 0
for i = 10, #KEYS do
  if redis.call('HDEL', KEYS[3], ARGV[i - 5]) == 0 then gone = gone + 1 end
  redis.call('DEL', KEYS[i])
end
local max = tonumber(ARGV[1])
if max <= 0 then return {gone} end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, max)
local payloads, attempts = {}, {}
for i, member in ipairs(due) do
  attempts[i], payloads[i] = parse(string.sub(member, string.find(member, ':', 1, true) + 1))
end
for i = 1, #due, 1000 do redis.call('ZREM', KEYS[2], unpack(due, i, math.min(i + 999, #due))) end
local retried = #payloads
if max > retried then
  local raw = redis.call('RPOP', KEYS[1], max - retried)
  if raw and retried == 0 then payloads = raw
  elseif raw then for i, payload in ipairs(raw) do payloads[retried + i] = payload end end
  for i = retried + 1, #payloads do attempts[i] = 0 end
end
if #payloads == 0 then return {gone} end
local batch = cmsgpack.pack(payloads, attempts)
redis.call('SET', KEYS[4], batch)
redis.call('HSET', KEYS[3], ARGV[4], ARGV[3])
return {gone, batch}
`);

/**
 * KEYS: main list, retry ZSET, retry seq. ARGV: pairs of (run at in ms, or '' for at once; payload), in
 * publish order. A publish whose records carry delays, in one script so that all of them are stored or none:
 * records due at once are pushed to the main list as raw bytes (as publish() does); delayed ones go to the
 * retry ZSET with 0 attempts, scored by their time, from where CLAIM takes them once due (a delayed record
 * waits exactly as a retried one does). Returns how many it stored.
 */
export const PUBLISH_DELAYED = luaScript(`${COMMON}
local bad = check({'list', 'zset', 'counter'})
if bad then return bad end
local raw = {}
for i = 1, #ARGV, 2 do
  if ARGV[i] == '' then table.insert(raw, ARGV[i + 1]) else to_retry(KEYS[2], KEYS[3], ARGV[i], 0, ARGV[i + 1]) end
end
for i = 1, #raw, 1000 do redis.call('LPUSH', KEYS[1], unpack(raw, i, math.min(i + 999, #raw))) end
return #ARGV / 2
`);

const ERROR_KEYS = 'KEYS[5], KEYS[6], KEYS[7], KEYS[8]';

/**
 * KEYS: the batch's key, batches hash, retry ZSET, retry seq, errors, error ids, error meta, error seq.
 * ARGV: batch id, failed at (ISO), then per failure: index, retry at (ms, or '' for the error queue), error,
 * enqueued at (ISO). Returns how many failures it settled (-1 when the batch was recovered meanwhile), then
 * the index and error queue id of each record it moved to the error queue.
 */
export const COMPLETE = luaScript(`${COMMON}
local bad = check({'batch', 'hash', 'zset', 'counter', 'list', 'list', 'hash', 'counter'})
if bad then return bad end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {-1} end
local payloads, attempts = load_batch(KEYS[1])
if not payloads then return key_error(KEYS[1], 'string', 'batch') end
redis.call('HDEL', KEYS[2], ARGV[1])
local settled, moved = 0, {}
if #ARGV > 2 then
  for i = 3, #ARGV, 4 do
    local index = tonumber(ARGV[i]) + 1
    local tries = attempts[index]
    if tries and tries >= 0 then
      if ARGV[i + 1] ~= '' then
        to_retry(KEYS[3], KEYS[4], ARGV[i + 1], tries + 1, payloads[index])
      else
        local id = to_errors(${ERROR_KEYS}, payloads[index], tries + 1, ARGV[i + 2], ARGV[2], ARGV[i + 3])
        table.insert(moved, ARGV[i])
        table.insert(moved, id)
      end
      settled = settled + 1
    end
  end
end
redis.call('DEL', KEYS[1])
table.insert(moved, 1, settled)
return moved
`);

/**
 * KEYS: the batch's key, batches hash, main list, retry ZSET, retry seq. ARGV: batch id, now (ms), the
 * acknowledged indexes (see `acked` above), n, then n indexes to give back (ascending). Returns how many it
 * gave back, -1 when the batch is gone (recovered). Records never run go back to the consuming end of the
 * main list as raw bytes; retried ones to the retry ZSET, due now. Records given back get attempts -1.
 */
export const RELEASE = luaScript(`${COMMON}
local bad = check({'batch', 'hash', 'list', 'zset', 'counter'})
if bad then return bad end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return -1 end
local whole, acked, next = acked(3)
if whole then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
local n = tonumber(ARGV[next])
local payloads, attempts = load_batch(KEYS[1])
if not payloads then return key_error(KEYS[1], 'string', 'batch') end
local raw, released = {}, 0
for i = next + 1, next + n do
  local index = tonumber(ARGV[i]) + 1
  local tries = attempts[index]
  if tries and tries >= 0 and not acked[index] then
    if tries == 0 then table.insert(raw, payloads[index]) else to_retry(KEYS[4], KEYS[5], ARGV[2], tries, payloads[index]) end
    payloads[index], attempts[index] = '', -1
    released = released + 1
  end
end
for i = #raw, 1, -1 do redis.call('RPUSH', KEYS[3], raw[i]) end
redis.call('DEL', KEYS[1])
for index, tries in ipairs(attempts) do
  if tries >= 0 and not acked[index] then
    redis.call('SET', KEYS[1], cmsgpack.pack(payloads, attempts))
    return released
  end
end
redis.call('HDEL', KEYS[2], ARGV[1])
return released
`);

/**
 * KEYS: as COMPLETE. ARGV: batch id, now (ms), max attempts, now (ISO), error, 'claimed' or 'orphan', then
 * the acknowledged indexes (see `acked` above). Counts one attempt for every record not acknowledged and
 * retries it now, or moves it to the error queue when out of attempts. Returns how many; 0 when another
 * recoverer or the consumer settled the batch first. 'orphan': a processing key without its entry in the
 * batches hash (left by a script that failed halfway before scripts checked their keys first).
 */
export const RECOVER = luaScript(`${COMMON}
local bad = check({'batch', 'hash', 'zset', 'counter', 'list', 'list', 'hash', 'counter'})
if bad then return bad end
local claimed = redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1
if ARGV[6] == 'orphan' then
  if claimed or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
elseif not claimed then return 0 end
local whole, acked = acked(7)
local payloads, attempts = {}, {}
if not whole then
  payloads, attempts = load_batch(KEYS[1])
  if not payloads then return key_error(KEYS[1], 'string', 'batch') end
end
redis.call('HDEL', KEYS[2], ARGV[1])
local max = tonumber(ARGV[3])
local moved = 0
if not whole then
  for index, tries in ipairs(attempts) do
    if tries >= 0 and not acked[index] then
      if tries + 1 >= max then
        to_errors(${ERROR_KEYS}, payloads[index], tries + 1, ARGV[5], ARGV[4], ARGV[4])
      else
        to_retry(KEYS[3], KEYS[4], ARGV[2], tries + 1, payloads[index])
      end
      moved = moved + 1
    end
  end
end
redis.call('DEL', KEYS[1])
return moved
`);

/**
 * KEYS: the keys of claimed batches. Returns how many records each holds (what claimed them, given back or
 * not); 0 for a key that is gone.
 */
export const BATCH_SIZES = luaScript(`${COMMON}
local sizes = {}
for i, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key).ok
  if kind == 'list' then sizes[i] = redis.call('LLEN', key)
  elseif kind == 'string' then
    local head = redis.call('GETRANGE', key, 0, 4)
    local b = string.byte(head, 1)
    if b >= 0x90 and b <= 0x9f then sizes[i] = b - 0x90
    elseif b == 0xdc then sizes[i] = string.byte(head, 2) * 256 + string.byte(head, 3)
    elseif b == 0xdd then
      sizes[i] = ((string.byte(head, 2) * 256 + string.byte(head, 3)) * 256 + string.byte(head, 4)) * 256
        + string.byte(head, 5)
    else sizes[i] = 0 end
  else sizes[i] = 0 end
end
return sizes
`);

/**
 * KEYS: errors, error ids, error meta, error seq. ARGV: now (ISO), after id, limit, before id ('' for none).
 * Returns up to `limit` [id, payload, meta JSON], oldest first: without a before id, the oldest above
 * `after id`; with one, the newest below it (and above `after id`). The ids list descends from its left
 * (newest) end, so a binary search finds where a cursor falls.
 */
export const LIST_ERRORS = luaScript(`${COMMON}
local bad = check({'list', 'list', 'hash', 'counter'})
if bad then return bad end
align(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
local after, limit, before = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if limit <= 0 then return {} end
-- The first index whose id is at or below bound (the list's length when none is).
local function first_at_or_below(bound)
  local lo, hi = 0, redis.call('LLEN', KEYS[2])
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonumber(redis.call('LINDEX', KEYS[2], mid)) > bound then lo = mid + 1 else hi = mid end
  end
  return lo
end
local first, last
if before then
  first = first_at_or_below(before - 1)
  last = math.min(first + limit, first_at_or_below(after)) - 1
else
  last = first_at_or_below(after) - 1
  first = math.max(0, last + 1 - limit)
end
if last < first then return {} end
local ids = redis.call('LRANGE', KEYS[2], first, last)
local payloads = redis.call('LRANGE', KEYS[1], first, last)
local out = {}
for i = #ids, 1, -1 do
  table.insert(out, {ids[i], payloads[i], redis.call('HGET', KEYS[3], ids[i]) or ''})
end
return out
`);

/**
 * KEYS: errors, error ids, error meta, error seq, main list. ARGV: now (ISO), limit, tombstone, 'replay' or
 * 'drop', then the ids (ascending; none: the oldest `limit`). Moves raw payloads back to the main list (LPUSH,
 * as Azafea's replay-errors does) or drops them; returns how many.
 */
export const TAKE_ERRORS = luaScript(`${COMMON}
local bad = check({'list', 'list', 'hash', 'counter', 'list'})
if bad then return bad end
align(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
local limit, tombstone, replay = tonumber(ARGV[2]), ARGV[3], ARGV[4] == 'replay'
local taken = 0
if #ARGV == 4 then
  while taken < limit do
    local payload = redis.call('RPOP', KEYS[1])
    if not payload then break end
    redis.call('HDEL', KEYS[3], redis.call('RPOP', KEYS[2]))
    if replay then redis.call('LPUSH', KEYS[5], payload) end
    taken = taken + 1
  end
  return taken
end
for i = 5, #ARGV do
  if taken >= limit then break end
  local index = redis.call('LPOS', KEYS[2], ARGV[i])
  if index then
    if replay then redis.call('LPUSH', KEYS[5], redis.call('LINDEX', KEYS[1], index)) end
    redis.call('LSET', KEYS[1], index, tombstone)
    redis.call('LSET', KEYS[2], index, tombstone)
    redis.call('HDEL', KEYS[3], ARGV[i])
    taken = taken + 1
  end
end
redis.call('LREM', KEYS[1], 0, tombstone)
redis.call('LREM', KEYS[2], 0, tombstone)
return taken
`);

/** A page of error records, oldest first (see ErrorPage). */
export async function listErrors(run: ScriptRunner, queue: string, page: ErrorPage): Promise<ErrorRecord[]> {
  const afterId = page.afterId ?? '0';
  const beforeId = page.beforeId ?? '';
  for (const id of [afterId, beforeId]) {
    if (!/^\d*$/.test(id)) throw new TypeError(`error ids are numbers; got "${id}"`);
  }
  const rows = asArray(await run(LIST_ERRORS, errorKeys(queue), [now(), afterId, page.limit, beforeId]));
  return rows.map((row) => toErrorRecord(queue, row));
}

/** Replays error records into the list `into` (raw bytes, attempts reset), or drops them when undefined. */
export async function takeErrors(
  run: ScriptRunner,
  queue: string,
  options: { into: string | undefined; ids: readonly string[] | undefined; limit: number },
): Promise<number> {
  const ids = sortedErrorIds(options.ids);
  if (ids?.length === 0 || options.limit <= 0) return 0;
  const tombstone = errorTombstone();
  const mode = options.into === undefined ? 'drop' : 'replay';
  const keys = [...errorKeys(queue), options.into ?? errorKeys(queue)[0]!];
  return asInteger(await run(TAKE_ERRORS, keys, [now(), options.limit, tombstone, mode, ...(ids ?? [])]));
}

/**
 * The error queue ids among `ids`, ascending and once each, as the scripts compare them with the ids list:
 * ids that are not numbers name no error record. Undefined when none were given.
 */
export function sortedErrorIds(ids: readonly string[] | undefined): string[] | undefined {
  const numeric = ids?.filter((id) => /^\d+$/.test(id)).map(BigInt);
  return numeric && [...new Set(numeric)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map(String);
}

/** A value no record holds, for marking the entries a script takes out of the error lists. */
export function errorTombstone(): string {
  return `\u0000baton-tombstone:${randomUUID()}`;
}

/** `appendonly` and `appendfsync`, or the error when CONFIG is disabled; throws when Redis is unreachable. */
export async function readPersistence(
  client: Redis,
): Promise<{ appendonly: string; appendfsync: string } | Error> {
  try {
    const [appendonly = '', appendfsync = ''] = await Promise.all(
      ['appendonly', 'appendfsync'].map(async (name) =>
        asText(asArray(await client.call('CONFIG', 'GET', name))[1]),
      ),
    );
    return { appendonly, appendfsync };
  } catch (error) {
    if (isUnavailable(error)) throw redisError(error);
    return error instanceof Error ? error : new Error(String(error));
  }
}

function now(): string {
  return new Date().toISOString();
}

/** A row of LIST_ERRORS: [id, payload, metadata JSON]. */
function toErrorRecord(queue: string, row: unknown): ErrorRecord {
  const [id, payload, meta] = asArray(row);
  let details: unknown;
  try {
    details = JSON.parse(meta === undefined ? '' : asBuffer(meta).toString());
  } catch {
    details = {};
  }
  const parsed = errorMeta.parse(typeof details === 'object' && details !== null ? details : {});
  return {
    id: asBuffer(id).toString(),
    queue,
    payload: asBuffer(payload),
    attempts: parsed.attempts,
    error: parsed.error,
    failedAt: toDate(parsed.failed_at),
    enqueuedAt: toDate(parsed.enqueued_at),
  };
}

const errorMeta = z.object({
  attempts: z.number().int().catch(0),
  error: z.string().catch('(no details recorded)'),
  failed_at: z.string().catch(''),
  enqueued_at: z.string().catch(''),
});

function toDate(text: string): Date {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? new Date(0) : date;
}
