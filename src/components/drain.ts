// The drain of a stopping node: the components that can stop taking new work and finish what they hold,
// all at once, until one deadline (shutdown_timeout_ms). Past it, what is still draining is named in one
// log line, and the supervisor aborts it like any other run.
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';

export interface Drainable {
  readonly name: string;
  /** Starts the drain; resolves when it is over (a rejection is logged, and counts as over). */
  readonly drain: () => Promise<void>;
  /** Resolves when the run ends otherwise (it failed): there is nothing left to drain then. */
  readonly aborted: Promise<void>;
}

export interface Drain<K> {
  /** Resolves when `key`'s drain is over or the deadline passed; at once for a key that does not drain. */
  over(key: K): Promise<void>;
  /** Clears the deadline's timer. */
  close(): void;
}

/** Starts the drain of every item at once, with a deadline `ms` from now. */
export function startDrain<K>(items: ReadonlyMap<K, Drainable>, ms: number, log: Logger): Drain<K> {
  if (items.size === 0) return { over: () => Promise.resolve(), close: () => undefined };
  const left = new Map<K, string>();
  const draining = new Map<K, Promise<void>>();
  for (const [key, item] of items) {
    left.set(key, item.name);
    const drained = item.drain().catch((error: unknown) => {
      log.warn({ component: item.name, err: describeError(error) }, `component ${item.name}: drain() failed`);
    });
    draining.set(
      key,
      Promise.race([drained, item.aborted]).then(() => {
        left.delete(key);
      }),
    );
  }
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      if (left.size > 0) {
        log.warn(
          { components: [...left.values()], shutdownTimeoutMs: ms },
          `in-flight batches still running after shutdown_timeout_ms (${ms} ms): aborting them`,
        );
      }
      resolve();
    }, ms);
  });
  return {
    over: (key) => Promise.race([draining.get(key) ?? Promise.resolve(), deadline]),
    close: () => clearTimeout(timer),
  };
}
