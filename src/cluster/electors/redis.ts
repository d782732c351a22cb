// The redis elector: leadership is a lease in Redis. `baton:group:<group>:leader` holds `<node>|<term>` with
// a time to live of lease_ms and `…:term` counts terms; Lua scripts make taking, renewing and releasing the
// lease atomic compare-and-sets, so that each term has exactly one winner.
//
// Timing: a primary that could not renew for renew_deadline_ms (< lease_ms, on its own monotonic clock,
// counted from when the last successful renewal was *sent*) steps down before its lease can expire on the
// server, so a partitioned primary is gone before another node can win. A crashed primary cannot release its
// lease: crash failover takes about lease_ms (what was left of the lease, plus at most one poll). A node that
// stops or resigns deletes its lease, and another node takes over at its next poll. A process frozen for
// longer than lease_ms − renew_deadline_ms (a debugger, SIGSTOP, a swap storm) can still overlap with the
// next primary: the fence in the sink refuses its late writes.
import type { Redis } from 'ioredis';

import { Alarm } from '../../util/sleep.js';
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { RedisConnection } from '../../redis/connection.js';
import { asArray, asInteger, asText } from '../../redis/replies.js';
import { luaScript, runScript } from '../../redis/script.js';
import { backoffDelay } from '../../util/backoff.js';
import { groupPrefix, memberKey } from '../membership-redis.js';
import type { Elector, ElectorListener, ElectorOptions } from '../types.js';
import { StateReporter } from './reporter.js';

/**
 * KEYS: leader, term, preferred; ARGV: node, lease ms, term floor, member key prefix, may take ('1'/'0').
 * Returns {'won', term} | {'held', '<node>|<term>'} | {'deferred', preferred node} | {'none', ''}.
 */
const ACQUIRE = luaScript(`
local current = redis.call('GET', KEYS[1])
if current then
  -- A lease of this node that it no longer uses (it stepped down or restarted) gives way to a new term,
  -- so that every reign has a term of its own.
  if string.match(current, '^(.*)|%d+$') ~= ARGV[1] or ARGV[5] ~= '1' then return { 'held', current } end
elseif ARGV[5] ~= '1' then
  return { 'none', '' }
end
local preferred = redis.call('GET', KEYS[3])
if preferred and preferred ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. preferred) == 1 then
  return { 'deferred', preferred }
end
local term = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if term <= floor then
  term = floor + 1
  redis.call('SET', KEYS[2], term)
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. term, 'PX', ARGV[2])
if preferred then redis.call('DEL', KEYS[3]) end
return { 'won', tostring(term) }
`);

/** KEYS: leader; ARGV: '<node>|<term>', lease ms. 1 when the lease was still ours and is extended. */
const RENEW = luaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`);

/** KEYS: leader, preferred; ARGV: '<node>|<term>', node to prefer or '', lease ms. 1 when released. */
const RELEASE = luaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
return 1
`);

const RECONNECT_BACKOFF = { initialMs: 1_000, maxMs: 32_000 };

export interface RedisElectorOptions extends ElectorOptions {
  /** redis:// or rediss:// URL. */
  readonly url: string;
  readonly log: Logger;
  /**
   * The group's fence (0 when never raised). Terms are taken above it and above every term this node has
   * seen, so that a Redis that lost its counter cannot hand out a term the fence already refuses.
   */
  readonly currentTerm?: () => Promise<number>;
}

export class RedisElector implements Elector {
  readonly kind = 'redis';
  readonly #options: RedisElectorOptions;
  readonly #log: Logger;
  readonly #connection: RedisConnection;
  /** The connection's client, for scripts. */
  readonly #client: Redis;
  readonly #reporter: StateReporter;
  readonly #keys: { leader: string; term: string; preferred: string };
  /** How often a secondary looks: often enough to notice an expired lease well within lease_ms. */
  readonly #pollMs: number;
  #floor = 0;
  /** Consecutive failed looks while secondary: the back-off exponent. */
  #failures = 0;
  #deadline: NodeJS.Timeout | undefined;
  /** Monotonic time before which this node does not take the lease (after resigning). */
  #outUntil = 0;
  /** Cut short when something happens that is worth a look now. */
  readonly #alarm = new Alarm();
  #starting: Promise<void> | undefined;
  #loop: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;

  constructor(options: RedisElectorOptions) {
    if (!(options.renewDeadlineMs < options.leaseMs)) {
      throw new RangeError('redis elector: renewDeadlineMs must be below leaseMs');
    }
    this.#options = options;
    this.#log = options.log;
    this.#reporter = new StateReporter({ log: options.log, name: 'redis elector', logStates: true });
    const prefix = groupPrefix(options.group);
    this.#keys = { leader: `${prefix}leader`, term: `${prefix}term`, preferred: `${prefix}preferred` };
    this.#pollMs = Math.max(10, Math.min(options.heartbeatMs, Math.floor(options.leaseMs / 4)));
    this.#connection = new RedisConnection(options.url, {
      maxRetriesPerRequest: 1,
      // A partition shows as silence, not as an error: a command unanswered for as long as a primary may go
      // without renewing drops the connection (its later replies could not be trusted) and reconnects.
      socketTimeout: options.renewDeadlineMs,
      connectTimeout: Math.max(options.renewDeadlineMs, 1_000),
    });
    this.#client = this.#connection.client;
    // Back from an outage: look at once instead of at the end of the back-off.
    this.#client.on('ready', () => {
      if (this.#failures > 0) this.#alarm.wake();
    });
  }

  start(listener: ElectorListener): Promise<void> {
    return (this.#starting ??= this.#start(listener));
  }

  async #start(listener: ElectorListener): Promise<void> {
    this.#reporter.attach(listener);
    if (this.#options.currentTerm) {
      this.#floor = await this.#options.currentTerm().catch((error: unknown) => {
        this.#log.warn({ err: describeError(error) }, 'redis elector: could not read the fence; assuming 0');
        return 0;
      });
    }
    // One bounded attempt to connect, so that the first state is an answer rather than "undecided".
    await within(this.#connection.connect(), this.#options.renewDeadlineMs);
    const delay = await this.#tick();
    if (!this.#reporter.delivered)
      this.#reporter.report(this.#reporter.state, 'leader-gone', 'no primary yet');
    if (this.#stopping) return;
    this.#loop = this.#run(delay);
  }

  async #run(firstDelay: number): Promise<void> {
    let delay = firstDelay;
    while (!this.#stopping) {
      await this.#alarm.sleep(delay);
      if (this.#stopping) return;
      delay = await this.#tick();
    }
  }

  /** One renewal (primary) or look (otherwise); resolves with the delay before the next. Never throws. */
  async #tick(): Promise<number> {
    try {
      if (this.#reporter.state.role === 'primary') await this.#renew();
      else await this.#look();
      if (this.#failures > 0) this.#log.info('redis elector: Redis answers again');
      this.#failures = 0;
      return this.#reporter.state.role === 'primary' ? this.#options.heartbeatMs : this.#pollMs;
    } catch (error) {
      return this.#failed(error);
    }
  }

  #failed(error: unknown): number {
    const err = describeError(error ?? this.#connection.lastError);
    if (this.#reporter.state.role === 'primary') {
      // Keep trying at the heartbeat: the renew deadline, not this error, decides when to step down.
      this.#log.warn({ err }, 'redis elector: renewal failed; retrying');
      return this.#options.heartbeatMs;
    }
    this.#failures++;
    const delay = backoffDelay(this.#failures, RECONNECT_BACKOFF);
    this.#log.warn({ err, retryInMs: delay }, `redis elector: cannot reach Redis; retrying in ${delay} ms`);
    this.#reporter.report(
      { role: 'secondary', term: this.#reporter.state.term, leader: undefined },
      'unreachable',
      err,
    );
    return delay;
  }

  async #renew(): Promise<void> {
    const { term } = this.#reporter.state;
    const sentAt = performance.now();
    const reply = await runScript(
      this.#client,
      RENEW,
      [this.#keys.leader],
      [this.#holder(term), this.#leaseMs()],
    );
    // The renew deadline, stop() or resign() may have ended this reign while the reply was on its way.
    if (this.#reporter.state.role !== 'primary' || this.#reporter.state.term !== term || this.#stopping)
      return;
    if (asInteger(reply) === 1) return this.#renewed(sentAt, term);
    this.#stepDown('lost-lease', `the lease of term ${term} is no longer this node's`);
    await this.#look();
  }

  async #look(): Promise<void> {
    const mayTake = !this.#stopping && performance.now() >= this.#outUntil;
    const floor = Math.max(this.#floor, this.#reporter.state.term);
    const sentAt = performance.now();
    const reply = asArray(
      await runScript(
        this.#client,
        ACQUIRE,
        [this.#keys.leader, this.#keys.term, this.#keys.preferred],
        [this.#options.node, this.#leaseMs(), floor, memberKey(this.#options.group, ''), mayTake ? '1' : '0'],
      ),
    );
    const status = asText(reply[0]);
    const value = asText(reply[1]);
    if (status === 'won') {
      const term = asInteger(value);
      if (this.#stopping) {
        // stop() ran while this look was on its way: give the lease straight back.
        await this.#release(term, undefined);
        return;
      }
      this.#reporter.report(
        { role: 'primary', term, leader: this.#options.node },
        'elected',
        `won term ${term}`,
      );
      this.#renewed(sentAt, term);
      return;
    }
    const holder = status === 'held' ? parseHolder(value) : undefined;
    // Our own lease from a reign we left (its release failed) is no leader: it only waits to expire.
    if (holder && holder.node !== this.#options.node) {
      const { node, term } = holder;
      this.#reporter.report(
        { role: 'secondary', term, leader: node },
        'new-leader',
        `${node} is primary in term ${term}`,
      );
    } else if (this.#reporter.state.leader !== undefined) {
      const why =
        status === 'deferred' ? `waiting for ${value}, named to take over` : 'no node holds the lease';
      this.#reporter.report(
        { role: 'secondary', term: this.#reporter.state.term, leader: undefined },
        'leader-gone',
        why,
      );
    }
  }

  /** A renewal sent at `sentAt` succeeded: the lease on the server runs at least until sentAt + lease. */
  #renewed(sentAt: number, term: number): void {
    clearTimeout(this.#deadline);
    const wait = Math.max(0, sentAt + this.#options.renewDeadlineMs - performance.now());
    this.#deadline = setTimeout(() => {
      if (this.#reporter.state.role !== 'primary' || this.#reporter.state.term !== term) return;
      const ms = this.#options.renewDeadlineMs;
      this.#stepDown('renew-failed', `could not renew the lease of term ${term} for ${ms} ms`);
    }, wait);
  }

  #stepDown(cause: string, message: string): void {
    clearTimeout(this.#deadline);
    this.#deadline = undefined;
    this.#reporter.report(
      { role: 'secondary', term: this.#reporter.state.term, leader: undefined },
      cause,
      message,
    );
  }

  async resign(options: { to?: string } = {}): Promise<void> {
    const { role, term } = this.#reporter.state;
    if (role !== 'primary' || this.#stopping) return;
    const { to } = options;
    if (to === this.#options.node) {
      this.#log.info('redis elector: asked to hand over to this node, which is already primary');
      return;
    }
    // Out long enough for the others' polls to find the lease free; a named node is preferred while alive.
    this.#outUntil = performance.now() + 2 * this.#options.heartbeatMs;
    this.#stepDown('resigned', to === undefined ? 'stepped down on request' : `handing over to ${to}`);
    await this.#release(term, to);
    this.#alarm.wake();
  }

  stop(): Promise<void> {
    return (this.#stopping ??= this.#stop());
  }

  async #stop(): Promise<void> {
    this.#alarm.wake();
    const { role, term } = this.#reporter.state;
    if (role === 'primary') {
      this.#stepDown('stopped', 'leaving the group');
      await this.#release(term, undefined);
    }
    clearTimeout(this.#deadline);
    // A look in flight may still win; it sees #stopping and gives the lease back before the loop ends.
    await this.#starting?.catch(() => undefined);
    await this.#loop;
    await this.#connection.close();
  }

  /** Deletes the lease of `term` if it is still ours, naming `to` as preferred. Never throws. */
  async #release(term: number, to: string | undefined): Promise<void> {
    try {
      const keys = [this.#keys.leader, this.#keys.preferred];
      const released = await runScript(this.#client, RELEASE, keys, [
        this.#holder(term),
        to ?? '',
        this.#leaseMs(),
      ]);
      if (asInteger(released) !== 1)
        this.#log.warn(`redis elector: the lease of term ${term} was already gone`);
    } catch (error) {
      const err = describeError(error);
      this.#log.warn(
        { err },
        `redis elector: could not release the lease of term ${term}; it expires on its own`,
      );
    }
  }

  #holder(term: number): string {
    return `${this.#options.node}|${term}`;
  }

  #leaseMs(): number {
    return Math.max(1, Math.round(this.#options.leaseMs));
  }
}

/** `<node>|<term>` → its parts (the node name may itself contain `|`). */
function parseHolder(value: string): { node: string; term: number } | undefined {
  const bar = value.lastIndexOf('|');
  const term = Number(value.slice(bar + 1));
  if (bar < 0 || !Number.isInteger(term)) return undefined;
  return { node: value.slice(0, bar), term };
}

/** Waits for `promise`, but no longer than `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
