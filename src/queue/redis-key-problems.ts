// Keys of a Redis queue that hold the wrong type (a string where the error queue's list should be, …). The
// scripts refuse to run on them (src/redis/key-types.ts) and the work waits; this keeps which keys are broken,
// logs one line when a key breaks and one when it is fixed (not one per attempt), turns Redis's own WRONGTYPE
// reply (which names no key) into the error naming the key, and answers readiness.
import type { Redis } from 'ioredis';

import type { BackendUnavailableError } from '../errors.js';
import type { Logger } from '../log.js';
import { redisError } from '../redis/connection-errors.js';
import type { KeyProblem, KeyRole } from '../redis/key-types.js';
import {
  CHECK_KEYS,
  describeKeyProblem,
  isWrongType,
  keyProblemError,
  keyProblemOf,
  keyProblems,
} from '../redis/key-types.js';
import { runScript } from '../redis/script.js';
import type { ScriptRunner } from './redis-scripts.js';

export interface RoledKey {
  readonly key: string;
  readonly role: KeyRole;
}

export class KeyProblems {
  readonly #client: Redis;
  readonly #log: Logger;
  /** Broken keys by name, with their queue. */
  readonly #known = new Map<string, { readonly queue: string; readonly problem: KeyProblem }>();
  /** The errors thrown for a refusal, to tell them from others of the same class. */
  readonly #refusals = new WeakSet<object>();

  constructor(client: Redis, log: Logger) {
    this.#client = client;
    this.#log = log;
  }

  /** A ScriptRunner for the scripts of `queue`: a refusal naming a key is noted and thrown as the typed error. */
  runner(queue: string): ScriptRunner {
    return async (script, keys, args) => {
      try {
        return await runScript(this.#client, script, keys, args);
      } catch (error) {
        const problem = keyProblemOf(error);
        if (!problem) throw error;
        throw this.#note(queue, problem);
      }
    };
  }

  /** True while a key of `queue` is known to be broken; `shared`: one of the queue's own keys, not a batch's. */
  has(queue: string, options: { shared?: boolean } = {}): boolean {
    for (const { queue: owner, problem } of this.#known.values()) {
      if (owner === queue && !(options.shared === true && problem.expected === 'batch')) return true;
    }
    return false;
  }

  /** True for an error thrown because a script refused a key of the wrong type. */
  refused(error: unknown): boolean {
    return typeof error === 'object' && error !== null && this.#refusals.has(error);
  }

  /**
   * The error to throw for `error`, met on a command over the keys of `queue`: Redis's own WRONGTYPE becomes
   * the error naming the broken key (found by checking `keys`); anything else goes through redisError.
   */
  async explain(queue: string, keys: readonly RoledKey[], error: unknown): Promise<unknown> {
    if (!isWrongType(error)) return redisError(error);
    const [problem] = await this.check(queue, keys).catch(() => []);
    return problem ? this.#note(queue, problem) : redisError(error);
  }

  /**
   * Checks `keys` of `queue` (with the keys of `queue` known to be broken): notes the broken ones, and logs
   * the known ones that are fixed. Returns the broken ones.
   */
  async check(queue: string, keys: readonly RoledKey[]): Promise<KeyProblem[]> {
    const known = [...this.#known.values()]
      .filter((entry) => entry.queue === queue)
      .map(({ problem }) => ({ key: problem.key, role: problem.expected }));
    const all = [...new Map([...keys, ...known].map((entry) => [entry.key, entry])).values()];
    if (all.length === 0) return [];
    const reply = await runScript(
      this.#client,
      CHECK_KEYS,
      all.map((entry) => entry.key),
      all.map((entry) => entry.role),
    );
    const found = keyProblems(reply);
    const broken = new Set(found.map((problem) => problem.key));
    for (const { key } of all) {
      const entry = this.#known.get(key);
      if (entry && !broken.has(key)) {
        this.#known.delete(key);
        this.#log.info(
          { queue, key },
          `redis: key "${key}" of queue "${queue}" is usable again; the queue's work resumes`,
        );
      }
    }
    for (const problem of found) this.#note(queue, problem);
    return found;
  }

  /** Records a broken key, logging it the first time; returns the error to throw. */
  #note(queue: string, problem: KeyProblem): BackendUnavailableError {
    const entry = this.#known.get(problem.key);
    if (!entry || entry.problem.holds !== problem.holds) {
      this.#known.set(problem.key, { queue, problem });
      this.#log.error(
        { queue, key: problem.key, holds: problem.holds, expected: problem.expected },
        `redis: ${describeKeyProblem(problem)}: queue "${queue}" waits, losing nothing, until the key is fixed (docs/operations.md)`,
      );
    }
    const refusal = keyProblemError(problem);
    this.#refusals.add(refusal);
    return refusal;
  }
}
