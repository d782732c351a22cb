// The dashboard: its page and assets (shipped in the package, nothing fetched from elsewhere), and
// GET /v1/dashboard/stream, a snapshot of the node every second as Server-Sent Events. The page and its
// assets hold no data and are served to anyone (the sign-in form lives there); every call the page makes
// goes through /v1/… and needs the token (the session cookie) when one is set.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

import type { FastifyInstance } from 'fastify';

import { clusterJson } from '../../cluster/wire.js';
import { componentJson } from '../../components/wire.js';
import { describeError, NotRunningError } from '../../errors.js';
import { queueJson } from '../../queue/wire.js';
import { taskRunJson } from '../../tasks/wire.js';
import type { HttpNode } from '../node.js';
import { EventStreams } from '../sse.js';

const ASSETS = fileURLToPath(new URL('../../dashboard/assets/', import.meta.url));
const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};
/** How often the stream sends a snapshot. */
const SNAPSHOT_MS = 1_000;

export function registerDashboardRoutes(app: FastifyInstance, node: HttpNode): void {
  for (const [url, asset] of Object.entries(FILES)) {
    app.get(url, async (_request, reply) =>
      reply
        .type(asset.type)
        .header('cache-control', 'no-cache')
        .header('x-content-type-options', 'nosniff')
        .send(await readFile(ASSETS + asset.file)),
    );
  }

  // Every open stream shares one snapshot per period, however many pages are open.
  let shared: { at: number; snapshot: Promise<Record<string, unknown>> } | undefined;
  const snapshot = (): Promise<Record<string, unknown>> => {
    if (shared === undefined || Date.now() - shared.at >= SNAPSHOT_MS / 2) {
      shared = { at: Date.now(), snapshot: takeSnapshot(node) };
    }
    return shared.snapshot;
  };

  const streams = new EventStreams(app);
  app.get('/v1/dashboard/stream', async (request, reply) => {
    const stream = streams.open(request, reply);
    if (typeof stream === 'string') throw new NotRunningError('the node is stopping');
    const send = async (): Promise<void> => {
      try {
        await stream.send([{ data: JSON.stringify(await snapshot()) }]);
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

async function takeSnapshot(node: HttpNode): Promise<Record<string, unknown>> {
  const [cluster, queues, tasks] = await Promise.all([
    node.admin.cluster(),
    node.admin.queues(),
    node.tasksConfigured ? node.admin.taskRuns({ limit: 20 }) : Promise.resolve(undefined),
  ]);
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
  };
}
