// Runs of a handler as a test's sink records them: when each began and ended, in milliseconds.

export interface TimedRun {
  readonly started: number;
  readonly ended: number;
}

/** The most runs in progress at once among `runs` (a run ending when another starts does not overlap it). */
export function mostAtOnce(runs: readonly TimedRun[]): number {
  const edges = runs.flatMap((run) => [
    { at: run.started, step: 1 },
    { at: run.ended, step: -1 },
  ]);
  edges.sort((a, b) => a.at - b.at || a.step - b.step);
  let current = 0;
  let most = 0;
  for (const edge of edges) {
    current += edge.step;
    most = Math.max(most, current);
  }
  return most;
}
