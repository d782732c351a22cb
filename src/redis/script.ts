// Lua scripts, each atomic on the Redis server: a script is its text and SHA1, sent by SHA1 and whole only
// when the server lacks it. The scripts themselves live with what they serve (the queue, the redis elector,
// the Redis membership); this is how any of them is made and run.
import { createHash } from 'node:crypto';

import type { Redis } from 'ioredis';

import { callRedis } from './connection-errors.js';

export interface LuaScript {
  readonly lua: string;
  readonly sha: string;
}

/** A Lua script with its SHA1, for runScript. */
export function luaScript(lua: string): LuaScript {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') };
}

/** Runs a script by its SHA1, sending it whole when the server lacks it (after a restart or SCRIPT FLUSH). */
export function runScript(
  client: Redis,
  { lua, sha }: LuaScript,
  keys: readonly string[],
  args: ReadonlyArray<string | Buffer | number>,
): Promise<unknown> {
  return callRedis(async () => {
    try {
      return await client.callBuffer('EVALSHA', sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('NOSCRIPT'))) throw error;
      return await client.callBuffer('EVAL', lua, keys.length, ...keys, ...args);
    }
  });
}
