// The Lua scripts of Redis queues with ordering = "key". Each key's records wait in a list of their own, `<list>:key:<key>`,
// oldest at the right as in the main list, each as `<attempts>:<due ms or ''>:<payload>`. The batches that
// hold records of a key are `:keys:held` (key → their ids, space-separated: one with key_concurrency = 1).
// While its list has records, a key held by fewer batches than key_concurrency is in line (`:keys:ready`,
// scored by a turn counter, so that a key that was served goes to the back) or waiting for its head's time or
// its rate (`:keys:waiting`); a key held by key_concurrency batches is in neither. With key_concurrency above
// 1, a failed record waits out its back-off in `:keys:retry` instead of at its key's head, which goes on
// without it. Scripts read key lists by the names they find in those sets, so a queue's keys must live on one
// Redis server (as everywhere in this backend).
import type { KeyRole } from '../redis/key-types.js';
import { luaScript } from '../redis/script.js';
import { COMMON } from './redis-scripts.js';

/** The fixed keys of an ordered queue whose list is `key` (the key lists are `${key}:key:<key>`). */
export function keyedKeys(key: string): {
  ready: string;
  turn: string;
  waiting: string;
  held: string;
  depth: string;
  wake: string;
  free: string;
  staging: string;
  lock: string;
  broken: string;
  retry: string;
} {
  return {
    ready: `${key}:keys:ready`,
    turn: `${key}:keys:turn`,
    waiting: `${key}:keys:waiting`,
    held: `${key}:keys:held`,
    depth: `${key}:keys:depth`,
    wake: `${key}:wake`,
    free: `${key}:free`,
    staging: `${key}:keying`,
    lock: `${key}:keying:lock`,
    broken: `${key}:keys:broken`,
    retry: `${key}:keys:retry`,
  };
}

/** The list of one key's records. */
export function keyList(key: string, recordKey: string): string {
  return `${key}:key:${recordKey}`;
}

/** key_concurrency as the scripts take it (an argument): 1 unless configured. */
export function keySlots(settings: { keyConcurrency?: number | undefined }): number {
  return settings.keyConcurrency ?? 1;
}

/** The counter of records a queue dropped as duplicates, and the key remembering one idempotency id. */
export function dedupKeys(key: string): { counter: string; id: (id: string) => string } {
  return { counter: `${key}:deduplicated`, id: (id) => `${key}:dedup:${id}` };
}

/** What the scripts below take after their own keys, in this order (see `keyedKeys`). */
export function lineKeys(key: string): string[] {
  const keys = keyedKeys(key);
  return [keys.ready, keys.turn, keys.waiting, keys.held, keys.depth, keys.wake];
}

export const LINE_ROLES: readonly KeyRole[] = ['zset', 'counter', 'zset', 'hash', 'counter', 'list'];

/** The roles of each fixed key of an ordered queue, for problems() and the refusals. */
export function keyedRoles(key: string): Array<{ key: string; role: KeyRole }> {
  const keys = keyedKeys(key);
  const roles: Array<[string, KeyRole]> = [
    ...lineKeys(key).map((name, index): [string, KeyRole] => [name, LINE_ROLES[index]!]),
    [keys.free, 'list'],
    [keys.staging, 'list'],
    [keys.lock, 'counter'],
    [keys.broken, 'zset'],
    [keys.retry, 'zset'],
  ];
  return roles.map(([name, role]) => ({ key: name, role }));
}

/** `check({...})` over `roles` ('' skips a key). */
export function checkRoles(roles: ReadonlyArray<KeyRole | ''>): string {
  return `local bad = check({${roles.map((role) => `'${role}'`).join(', ')}})\nif bad then return bad end`;
}

/**
 * Lua: the lineKeys() from KEYS[first] as locals, and the functions over them. `now` is in ms.
 */
export function keyedLib(first: number): string {
  const names = ['ready', 'turn', 'waiting', 'held', 'depth', 'wake'];
  return `${COMMON}
local ${names.join(', ')} = ${names.map((_, index) => `KEYS[${first + index}]`).join(', ')}
-- '<list>:keys:ready' less 'keys:ready', then 'key:'.
local prefix = string.sub(ready, 1, -11) .. 'key:'
-- Each key's theoretical arrival time under key_rate_limit: '<list>:tat:<key>' (ms by Redis's clock).
local tat_prefix = string.sub(ready, 1, -11) .. 'tat:'
local function envelope(tries, due, payload) return tries .. ':' .. due .. ':' .. payload end
-- Attempts, due time (nil: now) and payload of an envelope.
local function open(envelope)
  -- Most records have never run and are due at once.
  if string.byte(envelope, 2) == 58 and string.byte(envelope, 3) == 58 and string.byte(envelope, 1) == 48 then
    return 0, nil, string.sub(envelope, 4)
  end
  local a = string.find(envelope, ':', 1, true)
  local b = string.find(envelope, ':', a + 1, true)
  return tonumber(string.sub(envelope, 1, a - 1)), tonumber(string.sub(envelope, a + 1, b - 1)),
    string.sub(envelope, b + 1)
end
-- A member of the keyed retries ZSET: '<seq>:<key length>:<key><envelope>' (the sequence keeps equal records
-- apart), and back.
local function retry_member(seq, k, item) return string.format('%016d', seq) .. ':' .. #k .. ':' .. k .. item end
local function open_retry(member)
  local a = string.find(member, ':', 1, true)
  local b = string.find(member, ':', a + 1, true)
  local last = b + tonumber(string.sub(member, a + 1, b - 1))
  return string.sub(member, b + 1, last), string.sub(member, last + 1)
end
-- What the script changed of the wake list and the records counter, written once by finish().
local woken, added = false, 0
local function wake_up() woken = true end
-- Ends a script that wrote: wakes the waiting consumers when something became claimable, and counts the
-- records that entered or left the keys.
local function finish()
  if woken then
    redis.call('LPUSH', wake, '1')
    redis.call('LTRIM', wake, 0, 0)
  end
  if added ~= 0 then redis.call('INCRBY', depth, added) end
end
-- Puts items back at a list's consuming end (the right), items[1] first in line.
local function push_front(list, items)
  local reversed = {}
  for i = #items, 1, -1 do reversed[#reversed + 1] = items[i] end
  for i = 1, #reversed, 1000 do
    redis.call('RPUSH', list, unpack(reversed, i, math.min(i + 999, #reversed)))
  end
end
-- Puts a key that no batch holds in line by its head record: at the back of the ready keys, or waiting
-- for its head's time. A key without records is left out.
local function schedule(k, now)
  local head = redis.call('LINDEX', prefix .. k, -1)
  if not head then return end
  local _, due = open(head)
  if due and due > now then redis.call('ZADD', waiting, due, k)
  else
    redis.call('ZADD', ready, redis.call('INCR', turn), k)
    wake_up()
  end
end
-- key_concurrency, set by the scripts that are given it; nil in those that are not (they only let go of keys).
local slots = nil
-- The ids of the batches that hold key k.
local function holders(k)
  local ids, value = {}, redis.call('HGET', held, k)
  if value then for id in string.gmatch(value, '%S+') do ids[#ids + 1] = id end end
  return ids
end
-- Puts key k in line by its head, unless it is in line already (a key held by fewer batches than
-- key_concurrency may be); a key waiting is placed again, its head may have changed.
local function requeue(k, now)
  if redis.call('ZSCORE', ready, k) then return end
  redis.call('ZREM', waiting, k)
  schedule(k, now)
end
-- Appends one record to its key's tail (publish, keying, replay); a key that had none is put in line unless
-- it is held by key_concurrency batches (a script not given key_concurrency leaves any held key out: the
-- batch that lets go of it puts it in line).
local function append(k, item, now)
  added = added + 1
  if redis.call('LPUSH', prefix .. k, item) == 1 then
    local value = redis.call('HGET', held, k)
    if not value then schedule(k, now)
    elseif slots and slots > 1 and select(2, string.gsub(value, '%S+', '')) < slots then requeue(k, now) end
  end
end
-- Puts envelopes back at the head of their key, the first given first in line. back: key → envelopes.
local function push_heads(back)
  for k, items in pairs(back) do
    push_front(prefix .. k, items)
    added = added + #items
  end
end
-- Lets go of the keys of a batch (those it still holds), each put in line by its head unless it is already
-- (with key_concurrency = 1 a held key never is: it is scheduled at once).
local function free_keys(keys, batch, now)
  local seen = {}
  for _, k in ipairs(keys) do
    if k ~= '' and not seen[k] then
      seen[k] = true
      local value = redis.call('HGET', held, k)
      if value == batch then
        redis.call('HDEL', held, k)
        if slots == 1 then schedule(k, now) else requeue(k, now) end
      elseif value and string.find(value, batch, 1, true) then
        local rest = {}
        for _, id in ipairs(holders(k)) do if id ~= batch then rest[#rest + 1] = id end end
        if #rest == 0 then redis.call('HDEL', held, k) else redis.call('HSET', held, k, table.concat(rest, ' ')) end
        requeue(k, now)
      end
    end
  end
end
-- The error reply for the first key list among names that is not a list; nil when none is.
local function check_lists(names)
  for _, k in ipairs(names) do
    if k ~= '' then
      local kind = misfit(prefix .. k, 'list')
      if kind then return key_error(prefix .. k, kind, 'list') end
    end
  end
  return nil
end
-- A claimed batch with its keys ('' for none; a batch claimed before the queue was ordered has none): nil
-- before anything is written for a value that is not one.
local function load_keyed(key)
  local payloads, attempts, keys
  if redis.call('TYPE', key).ok == 'string' then
    local ok
    ok, payloads, attempts, keys = pcall(cmsgpack.unpack, redis.call('GET', key))
    if not (ok and type(payloads) == 'table' and type(attempts) == 'table' and #payloads == #attempts) then
      return nil
    end
  else
    payloads, attempts = load_batch(key)
    if not payloads then return nil end
  end
  if type(keys) ~= 'table' or #keys ~= #payloads then
    keys = {}
    for i = 1, #payloads do keys[i] = '' end
  end
  return payloads, attempts, keys
end
-- As to_errors, with the record's key in its metadata (replay puts it back in its key).
local function keyed_errors(errors, ids, meta, seq, payload, attempts, err, failed_at, enqueued_at, k)
  local id = to_errors(errors, ids, meta, seq, payload, attempts, err, failed_at, enqueued_at)
  if k and k ~= '' then
    local details = cjson.decode(redis.call('HGET', meta, id))
    details.key = k
    redis.call('HSET', meta, id, cjson.encode(details))
  end
  return id
end
`;
}

const ERROR_KEYS = 'KEYS[5], KEYS[6], KEYS[7], KEYS[8]';
const SETTLE_ROLES: ReadonlyArray<KeyRole> = [
  'batch',
  'hash',
  'zset',
  'counter',
  'list',
  'list',
  'hash',
  'counter',
  ...LINE_ROLES,
  'zset',
];

/**
 * KEYS: the batch's key, batches hash, retry ZSET, retry seq, the error keys, lineKeys(), the keyed retries
 * ZSET. ARGV: batch id, failed at (ISO), now (ms), key_concurrency, then per failure: index, retry at (ms, or
 * '' for the error queue), error, enqueued at (ISO). As COMPLETE, except that a keyed record to retry goes
 * back to the head of its key, due at its retry time (so that the key waits for it) or, with key_concurrency
 * above 1, to the keyed retries until then (the key goes on without it), and the batch's keys are let go of.
 * Returns as COMPLETE.
 */
export const COMPLETE_KEYED = luaScript(`${keyedLib(9)}
${checkRoles(SETTLE_ROLES)}
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {-1} end
local payloads, attempts, keys = load_keyed(KEYS[1])
if not payloads then return key_error(KEYS[1], 'string', 'batch') end
slots = tonumber(ARGV[4]) or 1
local failed = {}
for i = 5, #ARGV, 4 do
  local index = tonumber(ARGV[i]) + 1
  if attempts[index] and attempts[index] >= 0 then table.insert(failed, {index, i}) end
end
table.sort(failed, function(a, b) return a[1] < b[1] end)
local names = {}
for _, failure in ipairs(failed) do table.insert(names, keys[failure[1]]) end
bad = check_lists(names)
if bad then return bad end
redis.call('HDEL', KEYS[2], ARGV[1])
local moved, back = {}, {}
for _, failure in ipairs(failed) do
  local index, i = failure[1], failure[2]
  local tries, k = attempts[index] + 1, keys[index]
  if ARGV[i + 1] == '' then
    local id = keyed_errors(${ERROR_KEYS}, payloads[index], tries, ARGV[i + 2], ARGV[2], ARGV[i + 3], k)
    table.insert(moved, ARGV[i])
    table.insert(moved, id)
  elseif k ~= '' and slots > 1 then
    local member = retry_member(redis.call('INCR', KEYS[4]), k, envelope(tries, '', payloads[index]))
    redis.call('ZADD', KEYS[15], ARGV[i + 1], member)
    added = added + 1
  elseif k ~= '' then
    back[k] = back[k] or {}
    table.insert(back[k], envelope(tries, ARGV[i + 1], payloads[index]))
  else
    to_retry(KEYS[3], KEYS[4], ARGV[i + 1], tries, payloads[index])
  end
end
push_heads(back)
free_keys(keys, ARGV[1], tonumber(ARGV[3]))
redis.call('DEL', KEYS[1])
finish()
table.insert(moved, 1, #failed)
return moved
`);

/**
 * KEYS: the batch's key, batches hash, main list, retry ZSET, retry seq, free list, lineKeys(). ARGV: as
 * RELEASE. As RELEASE, except that keyed records go back to the head of their key in batch order (before
 * what was published since), records without a key to the free list, and each key of which the batch holds
 * no record any more (given back or acknowledged) is let go of. Returns as RELEASE.
 */
export const RELEASE_KEYED = luaScript(`${keyedLib(7)}
${checkRoles(['batch', 'hash', 'list', 'zset', 'counter', 'list', ...LINE_ROLES])}
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return -1 end
local now = tonumber(ARGV[2])
local whole, acked, next = acked(3)
local payloads, attempts, keys = load_keyed(KEYS[1])
if not payloads then return key_error(KEYS[1], 'string', 'batch') end
if whole then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  free_keys(keys, ARGV[1], now)
  finish()
  return 0
end
local n = tonumber(ARGV[next])
local names = {}
for i = next + 1, next + n do table.insert(names, keys[tonumber(ARGV[i]) + 1] or '') end
bad = check_lists(names)
if bad then return bad end
local raw, back, released = {}, {}, 0
for i = next + 1, next + n do
  local index = tonumber(ARGV[i]) + 1
  local tries, k = attempts[index], keys[index]
  if tries and tries >= 0 and not acked[index] then
    if k ~= '' then
      back[k] = back[k] or {}
      table.insert(back[k], envelope(tries, '', payloads[index]))
    elseif tries == 0 then table.insert(raw, payloads[index])
    else to_retry(KEYS[4], KEYS[5], ARGV[2], tries, payloads[index]) end
    payloads[index], attempts[index] = '', -1
    released = released + 1
  end
end
push_front(KEYS[6], raw)
if #raw > 0 then wake_up() end
push_heads(back)
local open_keys, outstanding = {}, false
for index, tries in ipairs(attempts) do
  if tries >= 0 and not acked[index] then
    outstanding = true
    open_keys[keys[index]] = true
  end
end
local done = {}
for _, k in ipairs(keys) do if not open_keys[k] then table.insert(done, k) end end
free_keys(done, ARGV[1], now)
redis.call('DEL', KEYS[1])
if outstanding then
  redis.call('SET', KEYS[1], cmsgpack.pack(payloads, attempts, keys))
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
finish()
return released
`);

/**
 * KEYS: as COMPLETE_KEYED. ARGV: as RECOVER. As RECOVER, except that keyed records go back to the head of
 * their key in batch order (one attempt counted), and the batch's keys are let go of.
 */
export const RECOVER_KEYED = luaScript(`${keyedLib(9)}
${checkRoles(SETTLE_ROLES)}
local claimed = redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1
if ARGV[6] == 'orphan' then
  if claimed or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
elseif not claimed then return 0 end
local whole, acked = acked(7)
local payloads, attempts, keys = load_keyed(KEYS[1])
if not payloads then
  if not whole then return key_error(KEYS[1], 'string', 'batch') end
  payloads, attempts, keys = {}, {}, {}
end
local max, now = tonumber(ARGV[3]), tonumber(ARGV[2])
local names = {}
if not whole then
  for index, tries in ipairs(attempts) do
    if tries >= 0 and not acked[index] and tries + 1 < max then table.insert(names, keys[index]) end
  end
end
bad = check_lists(names)
if bad then return bad end
redis.call('HDEL', KEYS[2], ARGV[1])
local moved, back = 0, {}
if not whole then
  for index, tries in ipairs(attempts) do
    if tries >= 0 and not acked[index] then
      local k = keys[index]
      if tries + 1 >= max then
        keyed_errors(${ERROR_KEYS}, payloads[index], tries + 1, ARGV[5], ARGV[4], ARGV[4], k)
      elseif k ~= '' then
        back[k] = back[k] or {}
        table.insert(back[k], envelope(tries + 1, '', payloads[index]))
      else
        to_retry(KEYS[3], KEYS[4], ARGV[2], tries + 1, payloads[index])
      end
      moved = moved + 1
    end
  end
end
push_heads(back)
free_keys(keys, ARGV[1], now)
redis.call('DEL', KEYS[1])
finish()
return moved
`);

/**
 * KEYS: batches hash, broken keys ZSET, lineKeys(). ARGV: now (ms). Lets go of keys held by a batch that is
 * gone (a batch settled by a script that did not know the queue was ordered), and puts back in line the
 * broken keys whose list is a list again. Returns how many keys it put back.
 */
export const REVIVE_KEYS = luaScript(`${keyedLib(3)}
${checkRoles(['hash', 'zset', ...LINE_ROLES])}
local now, revived = tonumber(ARGV[1]), 0
local entries = redis.call('HGETALL', held)
for i = 1, #entries, 2 do
  local k, live, all = entries[i], {}, 0
  for id in string.gmatch(entries[i + 1], '%S+') do
    all = all + 1
    if redis.call('HEXISTS', KEYS[1], id) == 1 then live[#live + 1] = id end
  end
  if #live < all then
    if #live == 0 then redis.call('HDEL', held, k) else redis.call('HSET', held, k, table.concat(live, ' ')) end
    requeue(k, now)
    revived = revived + 1
  end
end
for _, k in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if not misfit(prefix .. k, 'list') then
    redis.call('ZREM', KEYS[2], k)
    if redis.call('HEXISTS', held, k) == 0 then schedule(k, now) end
    revived = revived + 1
  end
end
finish()
return revived
`);

/**
 * KEYS: errors, error ids, error meta, error seq, main list, lineKeys(). ARGV: now (ISO), now (ms), limit,
 * tombstone, key_concurrency, then the ids (ascending; none: the oldest `limit`). As TAKE_ERRORS replaying, except that a
 * record whose metadata names a key goes to its key's tail (after what followed it); the others go to the
 * main list, to be keyed again. Returns how many.
 */
export const REPLAY_KEYED = luaScript(`${keyedLib(6)}
${checkRoles(['list', 'list', 'hash', 'counter', 'list', ...LINE_ROLES])}
align(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
local limit, tombstone, now = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[2])
local function key_of(id)
  local ok, details = pcall(cjson.decode, redis.call('HGET', KEYS[3], id) or '')
  if ok and type(details) == 'table' and type(details.key) == 'string' then return details.key end
  return ''
end
local chosen = {}
slots = tonumber(ARGV[5]) or 1
if #ARGV == 5 then
  local total = redis.call('LLEN', KEYS[2])
  for index = total - 1, math.max(0, total - limit), -1 do table.insert(chosen, index) end
else
  for i = 6, #ARGV do
    if #chosen >= limit then break end
    local index = redis.call('LPOS', KEYS[2], ARGV[i])
    if index then table.insert(chosen, index) end
  end
end
local names, ids, payloads = {}, {}, {}
for r, index in ipairs(chosen) do
  ids[r] = redis.call('LINDEX', KEYS[2], index)
  payloads[r] = redis.call('LINDEX', KEYS[1], index)
  names[r] = key_of(ids[r])
end
bad = check_lists(names)
if bad then return bad end
local raw = {}
for r, index in ipairs(chosen) do
  if names[r] ~= '' then append(names[r], envelope(0, '', payloads[r]), now)
  else table.insert(raw, payloads[r]) end
  redis.call('LSET', KEYS[1], index, tombstone)
  redis.call('LSET', KEYS[2], index, tombstone)
  redis.call('HDEL', KEYS[3], ids[r])
end
for i = 1, #raw, 1000 do redis.call('LPUSH', KEYS[5], unpack(raw, i, math.min(i + 999, #raw))) end
if #raw > 0 then wake_up() end
redis.call('LREM', KEYS[1], 0, tombstone)
redis.call('LREM', KEYS[2], 0, tombstone)
finish()
return #chosen
`);
