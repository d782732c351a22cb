// Membership kept in Redis, beside the redis elector's keys: a hash `baton:group:<group>:members` (node →
// JSON report with lastSeen) for listing, and a key per node with a time to live, which says the node is
// alive (the redis elector defers to a preferred node only while that key exists). Every time comes from
// Redis TIME, so that nodes with skewed clocks still agree on who was seen when.
import { NotRunningError } from '../errors.js';
import { z } from 'zod';

import type { Logger } from '../log.js';
import { RedisConnection } from '../redis/connection.js';
import { callRedis } from '../redis/connection-errors.js';
import { asArray, asInteger, asText } from '../redis/replies.js';
import { luaScript, runScript } from '../redis/script.js';
import type { MemberReport, Membership } from './membership.js';
import type { Member } from './types.js';

/** Prefix of every key of a group: `baton:group:<group>:`. */
export function groupPrefix(group: string): string {
  return `baton:group:${group}:`;
}

/** The key whose existence says `node` is alive (written by RedisMembership.heartbeat). */
export function memberKey(group: string, node: string): string {
  return `${groupPrefix(group)}member:${node}`;
}

/** Milliseconds since the epoch on the Redis server's clock. */
const NOW_MS = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/** KEYS: members hash, member key; ARGV: node, address ('' for none), role, term, ttl ms. */
const HEARTBEAT = luaScript(`${NOW_MS}
local now = now_ms()
local report = { role = ARGV[3], term = tonumber(ARGV[4]), lastSeen = now }
if ARGV[2] ~= '' then report.address = ARGV[2] end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(report))
redis.call('SET', KEYS[2], now, 'PX', ARGV[5])
return now
`);

/** KEYS: members hash; returns { now, node1, json1, node2, json2, … }. */
const LIST = luaScript(`${NOW_MS}
local reply = { tostring(now_ms()) }
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do reply[#reply + 1] = all[i] end
return reply
`);

const Report = z.object({
  address: z.string().optional(),
  role: z.enum(['primary', 'secondary', 'not-in-group']),
  term: z.number().int().nonnegative(),
  lastSeen: z.number().int().nonnegative(),
});

const DEFAULT_TTL_MS = 5_000;

export interface RedisMembershipOptions {
  /** redis:// or rediss:// URL (the same Redis as the redis elector, so that it sees who is alive). */
  readonly url: string;
  readonly group: string;
  readonly log: Logger;
  /** How long a heartbeat keeps a node alive: a few heartbeat intervals. Default 5 s. */
  readonly ttlMs?: number;
}

export class RedisMembership implements Membership {
  readonly #connection: RedisConnection;
  readonly #group: string;
  readonly #log: Logger;
  readonly #ttlMs: number;

  constructor(options: RedisMembershipOptions) {
    this.#group = options.group;
    this.#log = options.log;
    this.#ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
    this.#connection = new RedisConnection(options.url, {
      maxRetriesPerRequest: 1,
      onReconnect: (attempt, _delay, err) => {
        // Warn once per outage; the node logs failed heartbeats itself.
        if (attempt === 1)
          this.#log.warn({ err }, `redis membership: connection lost; reconnecting with back-off`);
      },
    });
  }

  async heartbeat(report: MemberReport): Promise<void> {
    await this.#connect();
    const keys = [this.#membersKey(), memberKey(this.#group, report.node)];
    await runScript(this.#connection.client, HEARTBEAT, keys, [
      report.node,
      report.address ?? '',
      report.role,
      report.term,
      this.#ttlMs,
    ]);
  }

  async list(withinMs: number): Promise<Member[]> {
    await this.#connect();
    const reply = asArray(await runScript(this.#connection.client, LIST, [this.#membersKey()], []));
    const now = asInteger(reply[0]);
    const members: Member[] = [];
    for (let i = 1; i + 1 < reply.length; i += 2) {
      const node = asText(reply[i]);
      const parsed = Report.safeParse(parseJson(asText(reply[i + 1])));
      if (!parsed.success) {
        this.#log.warn({ node }, 'redis membership: ignoring a malformed member entry');
        continue;
      }
      const { address, role, term, lastSeen } = parsed.data;
      if (now - lastSeen > withinMs) continue;
      members.push({ node, address, role, term, lastSeen: new Date(lastSeen) });
    }
    return members.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  }

  async leave(node: string): Promise<void> {
    await this.#connect();
    const { client } = this.#connection;
    await callRedis(() =>
      client.multi().hdel(this.#membersKey(), node).del(memberKey(this.#group, node)).exec(),
    );
  }

  close(): Promise<void> {
    return this.#connection.close();
  }

  #membersKey(): string {
    return `${groupPrefix(this.#group)}members`;
  }

  /**
   * The first call connects, and calls made meanwhile wait for that same attempt instead of failing on a
   * half-open client; later ones fail fast while the client reconnects in the background.
   */
  async #connect(): Promise<void> {
    if (this.#connection.closed) throw new NotRunningError('redis membership: closed');
    await this.#connection.connect();
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
