// The Lua scripts of Redis queues with ordering = "key". Each key's records wait in a list of their own, `<list>:key:<key>`,
// oldest at the right as in the main list, each as `<attempts>:<due ms or ''>:<payload>`. A key is in exactly
// one state while its list has records: in line (`:keys:ready`, scored by a turn counter, so that a key that
// was served goes to the back), waiting for its head's time (`:keys:waiting`), or held by one batch
// (`:keys:held`, key → batch). Scripts read key lists by the names they find in those sets, so a queue's keys
// must live on one Redis server (as everywhere in this backend).
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
  };
}

/** The list of one key's records. */
export function keyList(key: string, recordKey: string): string {
  return `${key}:key:${recordKey}`;
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
-- Appends one record to its key's tail (publish, keying, replay); a key that had none and is not held is
-- put in line.
local function append(k, item, now)
  added = added + 1
  if redis.call('LPUSH', prefix .. k, item) == 1 and redis.call('HEXISTS', held, k) == 0 then schedule(k, now) end
end
-- Puts envelopes back at the head of their key, the first given first in line. back: key → envelopes.
local function push_heads(back)
  for k, items in pairs(back) do
    push_front(prefix .. k, items)
    added = added + #items
  end
end
-- Lets go of the keys of a batch (those it still holds), each put in line by its head.
local function free_keys(keys, batch, now)
  local seen = {}
  for _, k in ipairs(keys) do
    if k ~= '' and not seen[k] then
      seen[k] = true
      if redis.call('HGET', held, k) == batch then
        redis.call('HDEL', held, k)
        schedule(k, now)
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

/**
 * KEYS: claimKeys() (main list, retry ZSET, batches hash, the batch's key, retry seq, the error keys), the
 * free list, lineKeys(), the keying staging list, the broken keys ZSET, then the keys of completed batches to
 * free. ARGV: max, now (ms), consumer, batch id, '1' when the main list holds records without a key (the
 * handler has no key()), then the ids of those completed batches. Frees the completed batches and their keys;
 * makes due waiting keys ready; then takes up to half of `max` from the records without a key (due retries,
 * the free list, and the main list when '1'), then walks the ready keys in turn order taking each one's due
 * records from its head (the key is then held by the batch), then fills the rest from the records without
 * a key. A key list of the wrong type is left out of line (`:keys:broken`) and the walk goes on. Returns how
 * many completed batches were gone, how many records wait to be keyed, then the batch value, if any.
 */
export const CLAIM_KEYED = luaScript(`${keyedLib(11)}
${checkRoles([
  'list',
  'zset',
  'hash',
  '',
  'counter',
  'list',
  'list',
  'hash',
  'counter',
  'list',
  ...LINE_ROLES,
  'list',
  'zset',
])}
local now = tonumber(ARGV[2])
local gone = 0
for i = 19, #KEYS do
  local id = ARGV[i - 13]
  if redis.call('HDEL', KEYS[3], id) == 0 then gone = gone + 1
  else
    local _, _, keys = load_keyed(KEYS[i])
    if keys then free_keys(keys, id, now) end
  end
  redis.call('DEL', KEYS[i])
end
local max = tonumber(ARGV[1])
local to_key = 0
if ARGV[5] ~= '1' then to_key = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[17]) end
if max <= 0 then
  finish()
  return {gone, to_key}
end
for _, k in ipairs(redis.call('ZRANGEBYSCORE', waiting, '-inf', now, 'LIMIT', 0, max)) do
  redis.call('ZREM', waiting, k)
  redis.call('ZADD', ready, redis.call('INCR', turn), k)
end
local payloads, attempts, keys, n = {}, {}, {}, 0
local function add(payload, tries, k)
  n = n + 1
  payloads[n], attempts[n], keys[n] = payload, tries, k
end
-- Records without a key, up to limit in all.
local function take_unkeyed(limit)
  if n >= limit then return end
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit - n)
  for _, member in ipairs(due) do
    local tries, payload = parse(string.sub(member, string.find(member, ':', 1, true) + 1))
    add(payload, tries, '')
  end
  for i = 1, #due, 1000 do redis.call('ZREM', KEYS[2], unpack(due, i, math.min(i + 999, #due))) end
  local lists = {KEYS[10]}
  if ARGV[5] == '1' then lists[2] = KEYS[1] end
  for _, list in ipairs(lists) do
    if n < limit then
      for _, payload in ipairs(redis.call('RPOP', list, limit - n) or {}) do add(payload, 0, '') end
    end
  end
end
take_unkeyed(math.ceil(max / 2))
while n < max do
  local line = redis.call('ZRANGE', ready, 0, math.min(max - n, 16) - 1)
  if #line == 0 then break end
  for _, k in ipairs(line) do
    if n >= max then break end
    redis.call('ZREM', ready, k)
    local list = prefix .. k
    if misfit(list, 'list') then redis.call('ZADD', KEYS[18], now, k)
    else
      local popped = redis.call('RPOP', list, max - n) or {}
      local taken = 0
      for i, item in ipairs(popped) do
        local tries, due, payload = open(item)
        if due and due > now then
          -- Not due: it and those after it go back, and the key waits for it unless the batch holds it.
          local rest = {}
          for j = i, #popped do rest[#rest + 1] = popped[j] end
          push_front(list, rest)
          if taken == 0 then redis.call('ZADD', waiting, due, k) end
          break
        end
        add(payload, tries, k)
        taken = taken + 1
      end
      if taken > 0 then
        redis.call('HSET', held, k, ARGV[4])
        added = added - taken
      end
    end
  end
end
take_unkeyed(max)
if n == 0 then
  finish()
  redis.call('DEL', wake)
  return {gone, to_key}
end
local batch = cmsgpack.pack(payloads, attempts, keys)
redis.call('SET', KEYS[4], batch)
redis.call('HSET', KEYS[3], ARGV[4], ARGV[3])
finish()
return {gone, to_key, batch}
`);

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
];

/**
 * KEYS: the batch's key, batches hash, retry ZSET, retry seq, the error keys, lineKeys(). ARGV: batch id,
 * failed at (ISO), now (ms), then per failure: index, retry at (ms, or '' for the error queue), error,
 * enqueued at (ISO). As COMPLETE, except that a keyed record to retry goes back to the head of its key,
 * due at its retry time (so that the key waits for it), and the batch's keys are let go of. Returns as
 * COMPLETE.
 */
export const COMPLETE_KEYED = luaScript(`${keyedLib(9)}
${checkRoles(SETTLE_ROLES)}
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {-1} end
local payloads, attempts, keys = load_keyed(KEYS[1])
if not payloads then return key_error(KEYS[1], 'string', 'batch') end
local failed = {}
for i = 4, #ARGV, 4 do
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
  if redis.call('HEXISTS', KEYS[1], entries[i + 1]) == 0 then
    redis.call('HDEL', held, entries[i])
    schedule(entries[i], now)
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
 * tombstone, then the ids (ascending; none: the oldest `limit`). As TAKE_ERRORS replaying, except that a
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
if #ARGV == 4 then
  local total = redis.call('LLEN', KEYS[2])
  for index = total - 1, math.max(0, total - limit), -1 do table.insert(chosen, index) end
else
  for i = 5, #ARGV do
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
