// The node's HTTP API (fastify): ingest, queue listings, error queues, the event log, health, and the `sql`
// command's endpoint. Every route but /healthz and /readyz needs the bearer token when one is configured.
import type { FastifyBaseLogger, FastifyError, FastifyInstance } from 'fastify';
import { fastify, LogController } from 'fastify';

import type { HttpConfig } from '../config/types.js';
import { BatonError, describeError, UnknownQueueError } from '../errors.js';
import type { Logger } from '../log.js';
import { registerAuth } from './auth.js';
import type { HttpNode } from './node.js';
import { registerAdminRoutes } from './routes/admin.js';
import { registerClusterRoutes } from './routes/cluster.js';
import { registerDashboardRoutes } from './routes/dashboard.js';
import { registerEventRoutes } from './routes/events.js';
import { registerIngestRoutes } from './routes/ingest.js';
import { registerMetricsRoute } from './routes/metrics.js';
import { registerQueueRoutes } from './routes/queues.js';
import { registerTaskRoutes } from './routes/tasks.js';

export interface HttpServer {
  /** Base URL, e.g. http://127.0.0.1:8080 */
  readonly address: string;
  close(): Promise<void>;
}

/** Registers a program's own routes on the node's HTTP API (see primaryOnly for primary-only ones). */
export type RouteRegistrar = (app: FastifyInstance, node: HttpNode) => void;

export async function startHttpServer(
  node: HttpNode,
  config: HttpConfig,
  log: Logger,
  routes?: RouteRegistrar,
): Promise<HttpServer> {
  const app = buildHttpApp(node, config, log);
  if (routes) routes(app, node);
  await app.listen({ host: config.host, port: config.port });
  const bound = app.server.address();
  const port = typeof bound === 'object' && bound !== null ? bound.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  let closing: Promise<void> | undefined;
  return {
    address: `http://${host}:${port}`,
    close: () => (closing ??= app.close()),
  };
}

export interface RouteEntry {
  readonly method: string;
  readonly url: string;
}

const routeTables = new WeakMap<FastifyInstance, RouteEntry[]>();

/** Every route of an app built by buildHttpApp (the program's own included), e.g. to check them all. */
export function routesOf(app: FastifyInstance): readonly RouteEntry[] {
  return routeTables.get(app) ?? [];
}

export function buildHttpApp(node: HttpNode, config: HttpConfig, log: Logger): FastifyInstance {
  const httpLog: FastifyBaseLogger = log.child({ component: 'http' });
  // Request logging is off: at ingest rates it would drown the logs; failures are logged by the error handler.
  const app = fastify({
    loggerInstance: httpLog,
    bodyLimit: config.bodyLimitBytes,
    logController: new LogController({ disableRequestLogging: true }),
  });
  const table: RouteEntry[] = [];
  routeTables.set(app, table);
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) table.push({ method, url: route.url });
  });
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof UnknownQueueError) {
      return reply.code(404).send({ error: error.message, code: error.code, queues: error.known });
    }
    if (error instanceof BatonError) return reply.code(400).send({ error: error.message, code: error.code });
    const status = typeof error.statusCode === 'number' && error.statusCode >= 400 ? error.statusCode : 500;
    if (status >= 500) request.log.error({ err: describeError(error), url: request.url }, 'request failed');
    return reply.code(status).send({ error: error.message, code: error.code ?? 'INTERNAL' });
  });
  app.setNotFoundHandler((request, reply) =>
    reply
      .code(404)
      .send({ error: `no route ${request.method} ${request.url.split('?')[0] ?? ''}`, code: 'NOT_FOUND' }),
  );

  registerAuth(app, config);
  app.get('/healthz', () => ({ status: 'ok', node: node.name }));
  app.get('/readyz', async (_request, reply) => {
    const ready = await node.ready();
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', state: node.state });
  });
  registerQueueRoutes(app, node);
  registerMetricsRoute(app, node);
  registerDashboardRoutes(app, node);
  registerAdminRoutes(app, node, config);
  registerClusterRoutes(app, node, config.token ?? config.tokens[0]?.token);
  registerEventRoutes(app, node, node.config.events);
  registerTaskRoutes(app, node);
  // Ingest parses bodies as raw bytes, so it lives in its own encapsulated scope.
  void app.register((scope, _options, done) => {
    registerIngestRoutes(scope, node);
    done();
  });
  return app;
}
