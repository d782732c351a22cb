// Exponential back-off with jitter: the first delay, doubling per attempt up to a ceiling. The jitter
// (±20 %) keeps many records or nodes that failed together from retrying in lock-step.

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
