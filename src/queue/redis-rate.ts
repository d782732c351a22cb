// Rate limits of Redis queues (see rate-limit.ts): the queue's theoretical arrival time is a string key
// beside its list (`<list>:rate`, milliseconds), read and moved on in one script by Redis's own clock, so
// that every node shares one rate whatever its clock says.
import { callRedis } from '../redis/connection-errors.js';
import { asArray, asInteger } from '../redis/replies.js';
import type { LuaScript } from '../redis/script.js';
import { luaScript } from '../redis/script.js';
import type { RateGrant, RateLimiter } from './rate-limit.js';
import { burstWindowMs, grantOf } from './rate-limit.js';

/** Runs a script (the backend's runner, which explains keys of the wrong type). */
export type RateScriptRunner = (
  queue: string,
  script: LuaScript,
  keys: readonly string[],
  args: ReadonlyArray<string | number>,
) => Promise<unknown>;

/** The key expires once unused for this long past its time: an idle queue's key goes away. */
const RATE_KEY_TTL_MS = 60_000;

const NOW = `
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
`;

/**
 * KEYS: the rate key. ARGV: records wanted, rate per second, burst window (ms). Returns {granted, ms until
 * one is allowed}.
 */
const RESERVE = luaScript(`${NOW}
local rate = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local n = math.floor((now + window - tat) * rate / 1000)
if n > tonumber(ARGV[1]) then n = tonumber(ARGV[1]) end
if n < 0 then n = 0 end
if n > 0 then
  tat = tat + n * 1000 / rate
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + ${RATE_KEY_TTL_MS})
  return {n, 0}
end
return {0, math.ceil(tat + 1000 / rate - now - window)}
`);

/** KEYS: the rate key. ARGV: records given back, rate per second. */
const REFUND = luaScript(`${NOW}
tat = tat - tonumber(ARGV[1]) * 1000 / tonumber(ARGV[2])
if tat <= now then redis.call('DEL', KEYS[1]) return 0 end
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + ${RATE_KEY_TTL_MS})
return 0
`);

export class RedisRateLimiter implements RateLimiter {
  readonly #keyOf: (queue: string) => string;
  readonly #run: RateScriptRunner;

  constructor(keyOf: (queue: string) => string, run: RateScriptRunner) {
    this.#keyOf = keyOf;
    this.#run = run;
  }

  async reserve(queue: string, want: number, perSecond: number): Promise<RateGrant> {
    const reply = asArray(
      await callRedis(() =>
        this.#run(queue, RESERVE, [this.#keyOf(queue)], [want, perSecond, burstWindowMs(perSecond)]),
      ),
    );
    return grantOf(asInteger(reply[0]), asInteger(reply[1]));
  }

  async refund(queue: string, count: number, perSecond: number): Promise<void> {
    if (count <= 0) return;
    await callRedis(() => this.#run(queue, REFUND, [this.#keyOf(queue)], [count, perSecond]));
  }
}
