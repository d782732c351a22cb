// A group of node processes as a test sees it: each node's view of the group (GET /v1/cluster), the one
// primary the nodes agree on, and polling with a deadline.
import type { BatonNodeProcess } from './process.js';

export interface ClusterView {
  role: string;
  term: number;
  primary: string | null;
  members: Array<{ node: string; role: string; term: number }>;
}

/** The node's view of its group; undefined while it does not answer. */
export async function clusterView(node: BatonNodeProcess): Promise<ClusterView | undefined> {
  try {
    const response = await fetch(`${node.url}/v1/cluster`, { signal: AbortSignal.timeout(2000) });
    return (await response.json()) as ClusterView;
  } catch {
    return undefined;
  }
}

/** Polls `probe` every 50 ms until it returns a value (not undefined), or fails after `timeoutMs`. */
export async function waitFor<T>(
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The one primary among `nodes`, once every one of them answers and names the same term, with that term. */
export async function agreedPrimary(
  nodes: readonly BatonNodeProcess[],
  timeoutMs: number,
): Promise<{ primary: BatonNodeProcess; term: number }> {
  return waitFor(
    async () => {
      const views = await Promise.all(nodes.map(clusterView));
      if (views.some((v) => v === undefined)) return undefined;
      const primaries = views.filter((v) => v?.role === 'primary');
      if (primaries.length !== 1) return undefined;
      const primary = nodes[views.findIndex((v) => v?.role === 'primary')] as BatonNodeProcess;
      const term = primaries[0]?.term ?? 0;
      if (!views.every((v) => v?.term === term)) return undefined;
      return { primary, term };
    },
    timeoutMs,
    'one agreed primary',
  );
}
