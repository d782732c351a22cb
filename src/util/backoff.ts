// Exponential back-off with jitter: the first delay, doubling per attempt up to a ceiling. The jitter
// (±20 %) keeps many records or nodes that failed together from retrying in lock-step.
import { sleep } from './sleep.js';

export interface BackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
}

/** Delay before retry number `attempt` (1 = first retry). */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions,
  random: () => number = Math.random,
): number {
  const exponent = Math.max(0, Math.min(attempt - 1, 30));
  const base = Math.min(options.maxMs, options.initialMs * 2 ** exponent);
  return Math.round(base * (0.8 + 0.4 * random()));
}

export interface RetryOptions {
  readonly backoff: BackoffOptions;
  /** Ends the retries: once it aborts, the next failure is thrown. */
  readonly signal: AbortSignal;
  /** A failure that no retry can mend (thrown at once). */
  readonly final: (error: unknown) => boolean;
  /** Told of each failure that is retried, with the delay before the retry. */
  readonly onRetry: (error: unknown, delayMs: number) => void;
}

/** Runs `fn` until it succeeds, backing off after each failure, unless the failure is final or `signal` aborted. */
export async function retrying<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (options.signal.aborted || options.final(error)) throw error;
      const delay = backoffDelay(attempt, options.backoff);
      options.onRetry(error, delay);
      await sleep(delay, options.signal);
    }
  }
}
