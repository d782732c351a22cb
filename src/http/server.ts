// The node's HTTP API (fastify): ingest, queue listings, error queues, the event log, health, and the `sql`
// command's endpoint. Every route declares who may call it (auth.ts); the probes are open to all. Before
// auth, the Host and Origin checks keep pages of other sites out, and slow requests are cut off.
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';

import type { ConnectionError, FastifyBaseLogger, FastifyError, FastifyInstance } from 'fastify';
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
  RequestTimeoutError,
  StatementError,
} from '../errors.js';
import { isReadOnlyError } from '../store/read-only.js';
import { isConnectionError } from '../util/connection-errors.js';
import type { Logger } from '../log.js';
import type { RouteAccess } from './auth.js';
import { needs, ownRoutesFromNow, registerAuth, registerRouteAccess } from './auth.js';
import { registerBrowserChecks } from './browser.js';
import type { HttpNode } from './node.js';
import { registerAdminRoutes } from './routes/admin.js';
import { registerClusterRoutes } from './routes/cluster.js';
import { registerDashboardRoutes } from './routes/dashboard.js';
import { registerEventRoutes } from './routes/events.js';
import { registerIngestRoutes } from './routes/ingest.js';
import { registerMetricsRoute } from './routes/metrics.js';
import { registerQueueRoutes } from './routes/queues.js';
import { registerScheduleRoutes } from './routes/schedules.js';
import { registerTaskRoutes } from './routes/tasks.js';
import { registerWorkflowRoutes } from './routes/workflows.js';
import { checkUtf8Body } from './validate.js';

export interface HttpServer {
  /** Base URL, e.g. http://127.0.0.1:8080 */
  readonly address: string;
  close(): Promise<void>;
}

/**
 * Registers a program's own routes on the node's HTTP API (see primaryOnly for primary-only ones). A route
 * that declares no access (`needs(...)` from auth.ts, i.e. `config: { access }`) needs the `admin` scope.
 */
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
  /** Who may call it, as declared (or defaulted, for a program's own route); undefined: refused to all. */
  readonly access: RouteAccess | undefined;
}

const routeTables = new WeakMap<FastifyInstance, RouteEntry[]>();

/** Every route of an app built by buildHttpApp (the program's own included), e.g. to check them all. */
export function routesOf(app: FastifyInstance): readonly RouteEntry[] {
  return routeTables.get(app) ?? [];
}

export function buildHttpApp(node: HttpNode, config: HttpConfig, log: Logger): FastifyInstance {
  const httpLog: FastifyBaseLogger = log.child({ component: 'http' });
  const timeouts = requestTimeouts(config.requestTimeoutMs);
  // Request logging is off: at ingest rates it would drown the logs; failures are logged by the error handler.
  const app = fastify({
    loggerInstance: httpLog,
    bodyLimit: config.bodyLimitBytes,
    logController: new LogController({ disableRequestLogging: true }),
    // Believed X-Forwarded-Proto makes request.protocol https (the session cookie Secure), -For the client.
    trustProxy: typeof config.trustProxy === 'boolean' ? config.trustProxy : [...config.trustProxy],
    requestTimeout: timeouts.requestTimeout,
    http: timeouts,
    clientErrorHandler: answerClientError(config.requestTimeoutMs, httpLog),
  });
  const table: RouteEntry[] = [];
  routeTables.set(app, table);
  registerRouteAccess(app);
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) {
      table.push({ method, url: route.url, access: route.config?.access });
    }
  });
  // Routes only throw: every error is answered here, from the error table (src/errors.ts).
  app.setErrorHandler((thrown: FastifyError, request, reply) => {
    const error = asBatonError(thrown, request.id);
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
  // JSON bodies are checked as UTF-8 before parsing: decoding would store U+FFFD in place of bad bytes.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body: Buffer, done) => {
    checkUtf8Body(body);
    void parseJson(request, body.toString('utf8'), done);
  });

  registerBrowserChecks(app, config);
  registerAuth(app, config);
  app.get('/healthz', needs('open'), () => ({ status: 'ok', node: node.name }));
  app.get('/readyz', needs('open'), async (_request, reply) => {
    const { ready, reason, problems } = await node.readiness();
    return reply.code(ready ? 200 : 503).send({
      status: ready ? 'ready' : 'not ready',
      state: node.state,
      ...(reason ? { reason } : {}),
      ...(problems ? { problems } : {}),
    });
  });
  registerQueueRoutes(app, node);
  registerMetricsRoute(app, node);
  registerDashboardRoutes(app, node);
  registerAdminRoutes(app, node, config);
  registerClusterRoutes(app, node);
  registerEventRoutes(app, node, node.config.events);
  registerTaskRoutes(app, node);
  registerScheduleRoutes(app, node);
  registerWorkflowRoutes(app, node);
  // Ingest parses bodies as raw bytes, so it lives in its own encapsulated scope.
  void app.register((scope, _options, done) => {
    registerIngestRoutes(scope, node);
    done();
  });
  ownRoutesFromNow(app);
  return app;
}

/**
 * The error table's entry for anything a route threw: Baton's errors as they are; a lost store connection
 * as BACKEND_UNAVAILABLE; fastify's own refusals (a body over the limit, malformed JSON) by their status;
 * anything else is an internal error (500) whose answer names the log line, not the message (which may
 * quote a statement or the database's text).
 */
function asBatonError(error: FastifyError, requestId: string): BatonError {
  // A statement that failed because the store went away or takes no writes is the store's state, not the
  // request's fault: 503 with Retry-After, not the 400 of a refused statement.
  if (error instanceof BatonError && !(error instanceof StatementError)) return error;
  if (isConnectionError(error))
    return new BackendUnavailableError('store', 'the store is unreachable', { cause: error });
  if (isReadOnlyError(error)) {
    return new BackendUnavailableError('store', 'the store takes no writes now (a standby in recovery?)', {
      cause: error,
    });
  }
  if (error instanceof BatonError) return error;
  const status = typeof error.statusCode === 'number' ? error.statusCode : 500;
  if (status === 413) return new PayloadTooLargeError(error.message);
  if (status >= 400 && status < 500) return new BadRequestError(error.message);
  return new InternalError(`internal error: the node logged it (reqId ${requestId})`, { cause: error });
}

/** Node's own limit on the headers when request_timeout_ms is 0. */
const DEFAULT_HEADERS_TIMEOUT_MS = 60_000;
/** Headers come in one write from any real client: a connection that trickles them is cut sooner. */
const MAX_HEADERS_TIMEOUT_MS = 10_000;

/**
 * Node's limits on receiving a request: the whole of it (headers and body) within `requestTimeoutMs`, the
 * headers within at most 10 s. They end once the request is received, so a long answer (an SSE stream, a
 * long migration) is not cut. Node checks them every connectionsCheckingInterval, here a quarter of the
 * headers limit (at most 1 s), so that a request is cut at most that late.
 */
function requestTimeouts(requestTimeoutMs: number): {
  requestTimeout: number;
  headersTimeout: number;
  connectionsCheckingInterval: number;
} {
  const headersTimeout =
    requestTimeoutMs === 0 ? DEFAULT_HEADERS_TIMEOUT_MS : Math.min(requestTimeoutMs, MAX_HEADERS_TIMEOUT_MS);
  return {
    requestTimeout: requestTimeoutMs,
    headersTimeout,
    connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(headersTimeout / 4))),
  };
}

/**
 * Answers what Node refuses before fastify sees a request (a request not received in time, malformed HTTP)
 * in the error table's form, then closes the connection.
 */
function answerClientError(
  requestTimeoutMs: number,
  log: FastifyBaseLogger,
): (error: ConnectionError, socket: Socket) => void {
  return (error, socket) => {
    if (error.code === 'ECONNRESET' || socket.destroyed) return;
    const refusal =
      error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new RequestTimeoutError(
            `the request was not received whole within ${requestTimeoutMs} ms ([http] request_timeout_ms)`,
          )
        : new BadRequestError(
            error.code === 'HPE_HEADER_OVERFLOW' ? 'request headers too large' : 'malformed HTTP request',
          );
    // Debug only: a slow or broken client is the client's problem, and a flood of them must not flood the log.
    log.debug({ code: error.code, remote: socket.remoteAddress }, `client error: ${refusal.message}`);
    if (socket.writable) {
      const body = JSON.stringify(errorReply(refusal));
      socket.write(
        `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status] ?? ''}\r\nConnection: close\r\n` +
          `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    }
    socket.destroy(error);
  };
}
