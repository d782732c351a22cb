// The node's HTTP API (fastify): ingest, queue listings, error queues, the event log, health, and the `sql`
// command's endpoint. Every route but /healthz and /readyz needs the bearer token when one is configured.
import type { FastifyBaseLogger, FastifyError, FastifyInstance } from 'fastify';
import { fastify, LogController } from 'fastify';

import type { HttpConfig } from '../config/types.js';
import {
  BackendUnavailableError,
  BadRequestError,
  BatonError,
  describeError,
  errorReply,
  NotFoundError,
  PayloadTooLargeError,
  InternalError,
} from '../errors.js';
import { isConnectionError } from '../util/connection-errors.js';
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
  // Routes only throw: every error is answered here, from the error table (src/errors.ts).
  app.setErrorHandler((thrown: FastifyError, request, reply) => {
    const error = asBatonError(thrown);
    if (error.status >= 500 && !error.transient) {
      request.log.error({ err: describeError(thrown), url: request.url }, 'request failed');
    }
    if (error.code === 'UNAUTHORIZED') void reply.header('www-authenticate', 'Bearer');
    const retryAfter = error.retryAfterSeconds;
    if (retryAfter !== undefined) void reply.header('retry-after', String(retryAfter));
    return reply.code(error.status).send(errorReply(error));
  });
  app.setNotFoundHandler((request) => {
    throw new NotFoundError(`no route ${request.method} ${request.url.split('?')[0] ?? ''}`);
  });

  registerAuth(app, config);
  app.get('/healthz', () => ({ status: 'ok', node: node.name }));
  app.get('/readyz', async (_request, reply) => {
    const [ready, problems] = await Promise.all([node.ready(), node.problems()]);
    const body = { status: ready ? 'ready' : 'not ready', state: node.state };
    return reply.code(ready ? 200 : 503).send(problems.length > 0 ? { ...body, problems } : body);
  });
  registerQueueRoutes(app, node);
  registerMetricsRoute(app, node);
  registerDashboardRoutes(app, node);
  registerAdminRoutes(app, node, config);
  registerClusterRoutes(app, node);
  registerEventRoutes(app, node, node.config.events);
  registerTaskRoutes(app, node);
  // Ingest parses bodies as raw bytes, so it lives in its own encapsulated scope.
  void app.register((scope, _options, done) => {
    registerIngestRoutes(scope, node);
    done();
  });
  return app;
}

/**
 * The error table's entry for anything a route threw: Baton's errors as they are; a lost store connection
 * as BACKEND_UNAVAILABLE; fastify's own refusals (a body over the limit, malformed JSON) by their status;
 * anything else is an internal error (500).
 */
function asBatonError(error: FastifyError): BatonError {
  if (error instanceof BatonError) return error;
  if (isConnectionError(error))
    return new BackendUnavailableError('store', 'the store is unreachable', { cause: error });
  const status = typeof error.statusCode === 'number' ? error.statusCode : 500;
  if (status === 413) return new PayloadTooLargeError(error.message);
  if (status >= 400 && status < 500) return new BadRequestError(error.message);
  return new InternalError(error.message, { cause: error });
}
