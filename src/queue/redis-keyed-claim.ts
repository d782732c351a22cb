// The claim of a Redis queue with ordering = "key" (the layout is in redis-keyed-scripts.ts): one script that
// frees the completed batches, takes records without a key, and walks the keys in line taking each one's
// first records, as far as key_concurrency (batches holding a key at once) and key_rate_limit (records per
// second per key, by Redis's clock) allow.
import { luaScript } from '../redis/script.js';
import { checkRoles, keyedLib, LINE_ROLES } from './redis-keyed-scripts.js';

/**
 * KEYS: claimKeys() (main list, retry ZSET, batches hash, the batch's key, retry seq, the error keys), the
 * free list, lineKeys(), the keying staging list, the broken keys ZSET, the keyed retries ZSET, then the keys
 * of completed batches to free. ARGV: max, now (ms), consumer, batch id, '1' when the main list holds records
 * without a key (the handler has no key()), key_concurrency, key_rate_limit (records/s, '' for none), its
 * burst window (ms), then the ids of those completed batches. Frees the completed batches and their keys;
 * puts due keyed retries back at the head of their key; makes due waiting keys ready; then takes up to half
 * of `max` from the records without a key (due retries, the free list, and the main list when '1'), then
 * walks the ready keys in turn order taking each one's due records from its head, then fills the rest from
 * the records without a key. A key taken is held by the batch; one held by key_concurrency batches leaves the
 * line until one lets go of it, one held by fewer goes to the back of the line. With a rate, a key takes at
 * most what its time allows (the queue limiter's rule, rate-limit.ts, per key: its time in `<list>:tat:<k>`);
 * a key allowed none waits (`:keys:waiting`) until one record is. A key list of the wrong type is left out of
 * line (`:keys:broken`) and the walk goes on. Returns how many completed batches were gone, how many records
 * wait to be keyed, then the batch value, if any.
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
  'zset',
])}
local now = tonumber(ARGV[2])
slots = tonumber(ARGV[6]) or 1
local gone = 0
for i = 20, #KEYS do
  local id = ARGV[i - 11]
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
-- Keyed retries (key_concurrency > 1: a failed record does not hold its key back) go back to the head of their
-- key once due, to run as a record of the key again.
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[19], '-inf', now, 'LIMIT', 0, max)) do
  local k, item = open_retry(member)
  if misfit(prefix .. k, 'list') then redis.call('ZADD', KEYS[18], now, k)
  else
    redis.call('ZREM', KEYS[19], member)
    push_front(prefix .. k, {item})
    local count = #holders(k)
    if count == 0 or count < slots then requeue(k, now) end
  end
end
for _, k in ipairs(redis.call('ZRANGEBYSCORE', waiting, '-inf', now, 'LIMIT', 0, max)) do
  redis.call('ZREM', waiting, k)
  redis.call('ZADD', ready, redis.call('INCR', turn), k)
end
local rate, window = tonumber(ARGV[7]), tonumber(ARGV[8])
-- Redis's clock (ms), read once and only with a rate: keys share one rate whatever the nodes' clocks say.
local clock
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
-- How many records key k may take now under the rate, with its time; a key allowed none is put to wait.
local function allowance(k)
  if not clock then
    local time = redis.call('TIME')
    clock = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  end
  local stored = redis.pcall('GET', tat_prefix .. k)
  local tat = (type(stored) == 'string' and tonumber(stored)) or 0
  if tat < clock then tat = clock end
  local allowed = math.floor((clock + window - tat) * rate / 1000)
  if allowed < 1 then
    -- When one record is allowed, by this claim's clock (waiting keys are scored by the nodes' clocks).
    redis.call('ZADD', waiting, now + math.ceil(tat + 1000 / rate - window - clock) + 1, k)
  end
  return allowed, tat
end
take_unkeyed(math.ceil(max / 2))
while n < max do
  local line = redis.call('ZRANGE', ready, 0, math.min(max - n, 16) - 1)
  if #line == 0 then break end
  for _, k in ipairs(line) do
    if n >= max then break end
    redis.call('ZREM', ready, k)
    local list = prefix .. k
    local room, ids, tat = max - n, nil, nil
    if misfit(list, 'list') then
      redis.call('ZADD', KEYS[18], now, k)
      room = 0
    elseif slots > 1 then
      -- Held by key_concurrency batches (key_concurrency was lowered): out of line until one lets go.
      ids = holders(k)
      if #ids >= slots then room = 0 end
    end
    if room > 0 and rate then
      local allowed
      allowed, tat = allowance(k)
      if allowed < room then room = allowed end
    end
    if room > 0 then
      local popped = redis.call('RPOP', list, room) or {}
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
        added = added - taken
        if not ids then redis.call('HSET', held, k, ARGV[4])
        else
          ids[#ids + 1] = ARGV[4]
          redis.call('HSET', held, k, table.concat(ids, ' '))
          if #ids < slots then schedule(k, now) end
        end
        if rate then
          tat = tat + taken * 1000 / rate
          redis.call('SET', tat_prefix .. k, string.format('%.3f', tat), 'PX', math.ceil(tat - clock) + 1)
        end
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
