// A Lua script is not rolled back when a command inside it fails: a key of the wrong type met halfway would
// leave the writes before it applied. So each script first checks the key it will touch against the role it
// plays there, and fails before writing anything; this is that check (in Lua, for the scripts, and as a
// script of its own for readiness) and how its refusal reaches callers: BackendUnavailableError naming the key.
import { BackendUnavailableError } from '../errors.js';
import { asArray, asText } from './replies.js';
import type { LuaScript } from './script.js';
import { luaScript } from './script.js';

/**
 * What a key is for: one of Redis's types, `counter` (a string holding an integer, for INCR) or `batch` (a
 * claimed batch: a MessagePack string of arrays, or the list that earlier versions kept).
 */
export type KeyRole = 'list' | 'zset' | 'hash' | 'counter' | 'batch';

/** A key that holds what its role cannot use; `holds` is the Redis type it holds. */
export interface KeyProblem {
  readonly key: string;
  readonly holds: string;
  readonly expected: KeyRole;
}

/**
 * Lua functions: `misfit(key, role)` answers what the key holds when that cannot serve its role (nil when it
 * can, or when the key does not exist); `check(roles)` returns the error reply for the first of KEYS[i] that
 * is a misfit for roles[i] ('' skips a key), nil when none is. A script starts with
 * `local bad = check({...}) if bad then return bad end`.
 */
export const KEY_CHECKS = `
local function misfit(key, role)
  local kind = redis.call('TYPE', key).ok
  if kind == 'none' then return nil end
  if role == 'counter' then
    if kind == 'string' then
      local value = redis.call('GET', key)
      if #value <= 18 and string.match(value, '^%-?%d+$') then return nil end
    end
    return kind
  end
  if role == 'batch' then
    if kind == 'list' then return nil end
    if kind == 'string' then
      local b = string.byte(redis.call('GETRANGE', key, 0, 0))
      if b and ((b >= 0x90 and b <= 0x9f) or b == 0xdc or b == 0xdd) then return nil end
    end
    return kind
  end
  if kind == role then return nil end
  return kind
end
local function key_error(key, kind, role)
  return redis.error_reply('WRONGTYPE baton ' .. kind .. ' ' .. role .. ' ' .. key)
end
local function check(roles)
  for i, role in ipairs(roles) do
    if role ~= '' then
      local kind = misfit(KEYS[i], role)
      if kind then return key_error(KEYS[i], kind, role) end
    end
  end
  return nil
end
`;

/**
 * KEYS: keys to check; ARGV: the role of each. Returns [key, holds, role] for each key that cannot serve its
 * role. Reads only.
 */
export const CHECK_KEYS: LuaScript = luaScript(`${KEY_CHECKS}
local found = {}
for i, key in ipairs(KEYS) do
  local kind = misfit(key, ARGV[i])
  if kind then table.insert(found, {key, kind, ARGV[i]}) end
end
return found
`);

const REFUSAL = /^WRONGTYPE baton (\S+) (list|zset|hash|counter|batch) ([\s\S]*)$/;

/** The problem a script's refusal names (see `check` above); undefined for any other error. */
export function keyProblemOf(error: unknown): KeyProblem | undefined {
  if (!(error instanceof Error)) return undefined;
  const match = REFUSAL.exec(error.message);
  if (!match) return undefined;
  const [, holds = '', expected = '', key = ''] = match;
  return { key, holds, expected: toRole(expected) };
}

/** True for Redis's own refusal of a command on a key of another type (it does not name the key). */
export function isWrongType(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('WRONGTYPE');
}

/** The rows CHECK_KEYS returns, as problems. */
export function keyProblems(reply: unknown): KeyProblem[] {
  return asArray(reply).map((row) => {
    const [key, holds, expected] = asArray(row).map(asText);
    return { key: key ?? '', holds: holds ?? '', expected: toRole(expected ?? '') };
  });
}

const ROLES: readonly KeyRole[] = ['list', 'zset', 'hash', 'counter', 'batch'];

function toRole(text: string): KeyRole {
  const role = ROLES.find((candidate) => candidate === text);
  if (!role) throw new TypeError(`unexpected key role in a Redis reply: ${text}`);
  return role;
}

const EXPECTED: Record<KeyRole, string> = {
  list: 'a list',
  zset: 'a sorted set',
  hash: 'a hash',
  counter: 'a string holding an integer',
  batch: 'a claimed batch (a MessagePack string)',
};

/** One sentence: `key "errors-q" holds a string where a list is expected`. */
export function describeKeyProblem(problem: KeyProblem): string {
  // A counter and a batch are strings too: one that is a string has the wrong content.
  const shape = problem.expected === 'counter' || problem.expected === 'batch';
  const holds = problem.holds === 'string' && shape ? 'a string of another shape' : `a ${problem.holds}`;
  return `key "${problem.key}" holds ${holds} where ${EXPECTED[problem.expected]} is expected`;
}

/** Transient: the work waits, unchanged, until the key is fixed (docs/operations.md says how). */
export function keyProblemError(problem: KeyProblem): BackendUnavailableError {
  return new BackendUnavailableError(
    'redis',
    `${describeKeyProblem(problem)}; nothing was changed, and the work waits until the key is fixed`,
  );
}
