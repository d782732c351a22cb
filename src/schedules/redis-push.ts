// The record of a tick whose schedule publishes to a Redis queue. It cannot commit in the tick's store
// transaction, so it is pushed after that commit by one atomic script that sets a guard key per (schedule,
// tick) with NX and pushes only when it set it: pushed again (a retry, a new primary finishing a push whose
// confirmation was lost), it pushes nothing. The guard lives GUARD_TTL_MS, far longer than any retry.
import { RedisConnection } from '../redis/connection.js';
import { luaScript, runScript } from '../redis/script.js';

/** How long the guard of a pushed tick is kept: a tick left unpushed longer could be pushed twice. */
export const GUARD_TTL_MS = 7 * 86_400_000;

/**
 * KEYS: the queue's list, the guard. ARGV: the record, the guard's value, its TTL (ms). Returns 1 when it
 * pushed, 0 when the guard was there already. A list key of another type is refused before the guard is
 * set, so that a refused push is retried rather than taken as done.
 */
const PUSH_ONCE = luaScript(`
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'none' and kind ~= 'list' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a list')
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  redis.call('LPUSH', KEYS[1], ARGV[1])
  return 1
end
return 0
`);

export class RedisTickPush {
  readonly #connection: RedisConnection;

  constructor(url: string) {
    this.#connection = new RedisConnection(url, { maxRetriesPerRequest: 0 });
  }

  /** Pushes `record` to the list `key` unless this (schedule, tick) was pushed already; true when it pushed. */
  async push(key: string, record: Buffer, schedule: string, tick: number): Promise<boolean> {
    await this.#connection.connect();
    const guard = `baton:schedule-tick:${schedule}:${new Date(tick).toISOString()}`;
    const reply = await runScript(
      this.#connection.client,
      PUSH_ONCE,
      [key, guard],
      [record, '1', GUARD_TTL_MS],
    );
    return Number(reply) === 1;
  }

  close(): Promise<void> {
    return this.#connection.close();
  }
}
