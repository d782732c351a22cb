// The dashboard: its page and assets (shipped in the package, nothing fetched from elsewhere), and
// GET /v1/dashboard/stream, a snapshot of the node every second as Server-Sent Events. The page and its
// assets hold no data and are served to anyone (the sign-in form lives there); every call the page makes
// goes through /v1/… and needs the token (the session cookie) when one is set. The stream needs the read
// scope and shows only the queues and task runs the token may read, as /v1/queues and /v1/tasks do.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

import type { FastifyInstance } from 'fastify';

import { clusterJson } from '../../cluster/wire.js';
import { componentJson } from '../../components/wire.js';
import { describeError } from '../../errors.js';
import { queueJson } from '../../queue/wire.js';
import { visibleSchedules } from '../../schedules/status.js';
import { scheduleJson } from '../../schedules/wire.js';
import { taskRunJson } from '../../tasks/wire.js';
import { allowedNamespaces, allowedQueues, needs } from '../auth.js';
import type { HttpNode } from '../node.js';
import { EventStreams } from '../sse.js';

const ASSETS = fileURLToPath(new URL('../../dashboard/assets/', import.meta.url));
const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/dom.js': { file: 'dom.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/dag.js': { file: 'dag.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/workflows.js': { file: 'workflows.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};
/** How often the stream sends a snapshot. */
const SNAPSHOT_MS = 1_000;
/** Open dashboard streams one client address may hold (a few tabs), and that the node serves in all. */
const STREAMS_PER_CLIENT = 8;
const MAX_STREAMS = 64;

/** What a stream may show: undefined lists mean everything. */
interface Visible {
  readonly namespaces: readonly string[] | undefined;
  readonly queues: readonly string[] | undefined;
}

export function registerDashboardRoutes(app: FastifyInstance, node: HttpNode): void {
  for (const [url, asset] of Object.entries(FILES)) {
    app.get(url, needs('open'), async (_request, reply) =>
      reply
        .type(asset.type)
        .header('cache-control', 'no-cache')
        .header('x-content-type-options', 'nosniff')
        .send(await readFile(ASSETS + asset.file)),
    );
  }

  // The open streams of one token share one snapshot per period, however many pages are open.
  const shared = new Map<string, { at: number; snapshot: Promise<Record<string, unknown>> }>();
  const snapshot = (visible: Visible): Promise<Record<string, unknown>> => {
    const key = JSON.stringify([visible.namespaces ?? '*', visible.queues ?? '*']);
    const last = shared.get(key);
    if (last !== undefined && Date.now() - last.at < SNAPSHOT_MS / 2) return last.snapshot;
    const taken = { at: Date.now(), snapshot: takeSnapshot(node, visible) };
    // Snapshots of tokens no longer streaming are not kept: one entry per token at most, short-lived.
    for (const [other, entry] of shared) if (Date.now() - entry.at >= SNAPSHOT_MS * 2) shared.delete(other);
    shared.set(key, taken);
    return taken.snapshot;
  };

  const streams = new EventStreams(app, {
    perClient: STREAMS_PER_CLIENT,
    total: MAX_STREAMS,
    what: 'dashboard streams',
  });
  app.get('/v1/dashboard/stream', needs('read', { filtered: true }), async (request, reply) => {
    const visible: Visible = { namespaces: allowedNamespaces(request), queues: allowedQueues(request) };
    const stream = streams.openOrThrow(request, reply);
    const send = async (): Promise<void> => {
      try {
        await stream.send([{ data: JSON.stringify(await snapshot(visible)) }]);
      } catch (error) {
        request.log.warn({ err: describeError(error) }, 'dashboard snapshot failed');
        stream.comment(`snapshot failed: ${describeError(error)}`);
      }
    };
    void send();
    const timer = setInterval(() => void send(), SNAPSHOT_MS);
    stream.signal.addEventListener('abort', () => clearInterval(timer), { once: true });
    return reply;
  });
}

async function takeSnapshot(node: HttpNode, visible: Visible): Promise<Record<string, unknown>> {
  const { namespaces } = visible;
  const [cluster, allQueues, tasks, schedules] = await Promise.all([
    node.admin.cluster(),
    node.admin.queues(),
    node.tasksConfigured
      ? node.admin.taskRuns({ limit: 20, ...(namespaces ? { namespaces } : {}) })
      : Promise.resolve(undefined),
    node.admin.schedules(),
  ]);
  const queues = allQueues.filter((queue) => visible.queues?.includes(queue.name) ?? true);
  return {
    at: new Date().toISOString(),
    node: node.name,
    role: node.role,
    term: node.term,
    cluster: clusterJson(cluster),
    queues: queues.map(queueJson),
    components: node.components().map(componentJson),
    events_head: node.events?.head ?? null,
    tasks: tasks?.map(taskRunJson) ?? null,
    // A namespace-limited token sees the schedules of its namespaces (as GET /v1/schedules answers).
    schedules: visibleSchedules(schedules, namespaces).map(scheduleJson),
  };
}
