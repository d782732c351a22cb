// Delivers role changes to the program: `node-role-changed` subscriptions (first call at once, with
// previous = null), leader watches by key (the Raft leader-watch semantics), and an async iterable. Each
// subscriber has its own ordered queue: a slow or throwing callback delays only itself, never the elector
// or other subscribers. Throws are logged; slow callbacks are warned about.
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type {
  ElectorState,
  LeaderWatchEvent,
  LeaderWatchEventType,
  Role,
  RoleChange,
  StateCause,
} from './types.js';

export type RoleChangeCallback = (change: RoleChange) => unknown;
export type LeaderWatchCallback = (event: LeaderWatchEvent) => unknown;

/** A callback running longer than this is logged as slow. */
const SLOW_CALLBACK_MS = 1_000;

/** Runs callbacks one after another, each isolated: errors are logged, slowness is warned about. */
class SerialQueue {
  #tail: Promise<void> = Promise.resolve();

  constructor(
    private readonly what: string,
    private readonly log: Logger,
  ) {}

  push(call: () => unknown): void {
    this.#tail = this.#tail.then(async () => {
      const started = Date.now();
      const warn = setTimeout(() => {
        this.log.warn(`${this.what} is slow: still running after ${SLOW_CALLBACK_MS} ms`);
      }, SLOW_CALLBACK_MS);
      warn.unref();
      try {
        await call();
      } catch (error) {
        this.log.error(
          { err: describeError(error) },
          `${this.what} threw; the next change is still delivered`,
        );
      } finally {
        clearTimeout(warn);
        const took = Date.now() - started;
        if (took > SLOW_CALLBACK_MS) this.log.warn({ ms: took }, `${this.what} took ${took} ms`);
      }
    });
  }
}

interface Watch {
  readonly fn: LeaderWatchCallback;
  readonly eventType: LeaderWatchEventType | undefined;
  readonly queue: SerialQueue;
}

export class RoleEvents {
  readonly #log: Logger;
  #state: ElectorState;
  readonly #subscribers = new Set<{ callback: RoleChangeCallback; queue: SerialQueue }>();
  readonly #watches = new Map<string, Watch>();
  readonly #iterators = new Set<(change: RoleChange) => void>();

  constructor(initial: ElectorState, log: Logger) {
    this.#state = initial;
    this.#log = log;
  }

  get state(): ElectorState {
    return this.#state;
  }

  /** Applies a new state; delivers what changed. Returns at once: callbacks run on their own queues. */
  update(next: ElectorState, cause: StateCause): void {
    const previous = this.#state;
    if (previous.role === next.role && previous.term === next.term && previous.leader === next.leader) return;
    this.#state = next;
    if (previous.role !== next.role) {
      const change: RoleChange = {
        previous: previous.role,
        new: next.role,
        term: next.term,
        leader: next.leader,
      };
      for (const subscriber of this.#subscribers) subscriber.queue.push(() => subscriber.callback(change));
      for (const push of this.#iterators) push(change);
    }
    const event = leaderEvent(previous, next);
    if (!event) return;
    for (const [key, watch] of this.#watches) {
      if (watch.eventType !== undefined && watch.eventType !== event) continue;
      const payload: LeaderWatchEvent = {
        key,
        event,
        cause: cause.cause,
        message: cause.message,
        oldLeader: previous.leader,
        newLeader: next.leader,
        previous: previous.role,
        new: next.role,
        term: next.term,
      };
      watch.queue.push(() => watch.fn(payload));
    }
  }

  /** Calls `callback` at once with the current role (previous = null), then on every role change. */
  subscribe(callback: RoleChangeCallback): () => void {
    const subscriber = { callback, queue: new SerialQueue('a node-role-changed subscriber', this.#log) };
    this.#subscribers.add(subscriber);
    const { role, term, leader } = this.#state;
    subscriber.queue.push(() => callback({ previous: null, new: role, term, leader }));
    return () => {
      this.#subscribers.delete(subscriber);
    };
  }

  /** Registers `fn` under `key` (replacing an earlier watch of that key); no event type means both. */
  addLeaderWatch(key: string, fn: LeaderWatchCallback, eventType?: LeaderWatchEventType): void {
    if (typeof fn !== 'function') throw new TypeError(`leader watch "${key}" is not a function`);
    if (eventType !== undefined && eventType !== 'become-leader' && eventType !== 'become-follower') {
      throw new TypeError(`leader watch "${key}": unknown event type "${String(eventType)}"`);
    }
    this.#watches.set(key, { fn, eventType, queue: new SerialQueue(`leader watch "${key}"`, this.#log) });
  }

  /** Removes the watch of `key`; true when there was one. */
  removeLeaderWatch(key: string): boolean {
    return this.#watches.delete(key);
  }

  /** Role changes as an async iterable: the current role first (previous = null), then every change. */
  roleChanges(): AsyncIterableIterator<RoleChange> {
    const pending: RoleChange[] = [];
    const waiting: Array<(result: IteratorResult<RoleChange>) => void> = [];
    let done = false;
    const push = (change: RoleChange): void => {
      const resolve = waiting.shift();
      if (resolve) resolve({ value: change, done: false });
      else pending.push(change);
    };
    const finish = (): IteratorResult<RoleChange> => {
      done = true;
      this.#iterators.delete(push);
      for (const resolve of waiting.splice(0)) resolve({ value: undefined, done: true });
      return { value: undefined, done: true };
    };
    const { role, term, leader } = this.#state;
    pending.push({ previous: null, new: role, term, leader });
    this.#iterators.add(push);
    return {
      next: () => {
        const value = pending.shift();
        if (value) return Promise.resolve({ value, done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => waiting.push(resolve));
      },
      return: () => Promise.resolve(finish()),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}

/**
 * become-leader when this node wins; become-follower when it loses leadership, and whenever it learns of a
 * new primary while not primary (the Raft leader-watch meaning).
 */
function leaderEvent(previous: ElectorState, next: ElectorState): LeaderWatchEventType | undefined {
  if (next.role === 'primary' && previous.role !== 'primary') return 'become-leader';
  if (previous.role === 'primary' && next.role !== 'primary') return 'become-follower';
  if (next.role !== 'primary' && next.leader !== undefined && next.leader !== previous.leader) {
    return 'become-follower';
  }
  if (next.role !== 'primary' && next.term > previous.term && next.leader !== undefined)
    return 'become-follower';
  return undefined;
}

export type { Role };
