// The errors a caller of Baton can act on, in one table. Each class has a stable `code`, an HTTP status and
// the fields that say what failed (a config key, a queue, a backend); it keeps its `cause`. The HTTP API
// answers an error as `{error, code, ...details}` with the class's status, and clients rebuild the typed
// error from that answer (errorFromReply), so a caller catches the same class in-process and remote.

/** Every error code, with its HTTP status and whether the same request may succeed later (Retry-After). */
export const ERROR_CODES = {
  BAD_REQUEST: { status: 400, transient: false },
  INVALID_EVENT: { status: 400, transient: false },
  SQL_FAILED: { status: 400, transient: false },
  UNAUTHORIZED: { status: 401, transient: false },
  FORBIDDEN: { status: 403, transient: false },
  NOT_FOUND: { status: 404, transient: false },
  UNKNOWN_QUEUE: { status: 404, transient: false },
  UNKNOWN_ERROR_RECORD: { status: 404, transient: false },
  UNKNOWN_TASK: { status: 404, transient: false },
  UNKNOWN_EXECUTION: { status: 404, transient: false },
  UNKNOWN_WORKFLOW: { status: 404, transient: false },
  UNKNOWN_NODE: { status: 404, transient: false },
  EVENTS_DISABLED: { status: 404, transient: false },
  REQUEST_TIMEOUT: { status: 408, transient: false },
  NOT_IN_GROUP: { status: 409, transient: false },
  FENCED: { status: 409, transient: false },
  CLAIM_LOST: { status: 409, transient: false },
  PENDING_MIGRATIONS: { status: 409, transient: false },
  MIGRATION_REFUSED: { status: 409, transient: false },
  PAYLOAD_TOO_LARGE: { status: 413, transient: false },
  UNKNOWN_HOST: { status: 421, transient: false },
  TOO_MANY_REQUESTS: { status: 429, transient: true },
  CONFIG_INVALID: { status: 500, transient: false },
  NOTHING_TO_RUN: { status: 500, transient: false },
  INVALID_COMPONENT: { status: 500, transient: false },
  INVALID_TASK: { status: 500, transient: false },
  HANDLER_TIMEOUT: { status: 500, transient: false },
  BATCH_FAILED: { status: 500, transient: false },
  INTERNAL: { status: 500, transient: false },
  BACKEND_UNAVAILABLE: { status: 503, transient: true },
  NOT_PRIMARY: { status: 503, transient: true },
  NOT_RUNNING: { status: 503, transient: true },
  STORE_LOCKED: { status: 503, transient: true },
  WORK_ABORTED: { status: 503, transient: true },
} as const satisfies Record<string, { status: number; transient: boolean }>;

export type BatonErrorCode = keyof typeof ERROR_CODES;

/** Seconds a client is told to wait (Retry-After) before it sends a transient failure's request again. */
export const RETRY_AFTER_SECONDS = 1;

export abstract class BatonError extends Error {
  abstract readonly code: BatonErrorCode;

  /** The HTTP status this error is answered with. */
  get status(): number {
    return ERROR_CODES[this.code].status;
  }

  /** True when the same request may succeed later (a backend came back, a primary was elected, …). */
  get transient(): boolean {
    return ERROR_CODES[this.code].transient;
  }

  /** Seconds to wait before sending the request again (Retry-After), for a transient error. */
  get retryAfterSeconds(): number | undefined {
    return this.transient ? RETRY_AFTER_SECONDS : undefined;
  }

  /** Fields that the HTTP answer carries beside `error` and `code` (snake_case), for the client's parser. */
  details(): Record<string, unknown> {
    return {};
  }
}

/** Bad input to an HTTP route or an admin operation; the message names the field. */
export class BadRequestError extends BatonError {
  override readonly name: string = 'BadRequestError';
  readonly code = 'BAD_REQUEST';
}

/**
 * A published record that does not parse as its queue's payload (the handler module's `payload` schema):
 * nothing of the publish was stored. `record` is its position (1-based) among the records given; `line`
 * the line of the request body it came from, where the HTTP API knows it.
 */
export class InvalidPayloadError extends BadRequestError {
  override readonly name = 'InvalidPayloadError';
  readonly reason: string;
  readonly record: number;
  readonly count: number;
  readonly line: number | undefined;

  constructor(reason: string, where: { record: number; count: number; line?: number | undefined }) {
    const record = `record ${where.record} of ${where.count}`;
    super(`${where.line === undefined ? record : `line ${where.line} (${record})`}: ${reason}`);
    this.reason = reason;
    this.record = where.record;
    this.count = where.count;
    this.line = where.line;
  }

  override details(): Record<string, unknown> {
    return { record: this.record, ...(this.line === undefined ? {} : { line: this.line }) };
  }
}

/** A bad event or event query (key, namespace, offset, …). */
export class InvalidEventError extends BatonError {
  override readonly name = 'InvalidEventError';
  readonly code = 'INVALID_EVENT';
}

/**
 * A statement the database refused: its message starts with the database's own reason (SQLSTATE and
 * detail follow; a migration's failed statement is prefixed with the migration's id). A handler's failed
 * statement is described with it; `sql` answers it with 400.
 */
export class StatementError extends BatonError {
  override readonly name = 'StatementError';
  readonly code = 'SQL_FAILED';
  /** The SQLSTATE the database answered (e.g. 23502, not_null_violation), when it gave one. */
  readonly sqlState: string | undefined;

  constructor(message: string, options: { sqlState?: string | undefined; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.sqlState = options.sqlState;
  }

  override details(): Record<string, unknown> {
    return { sql_state: this.sqlState ?? null };
  }
}

/** A request without a valid token. */
export class UnauthorizedError extends BatonError {
  override readonly name = 'UnauthorizedError';
  readonly code = 'UNAUTHORIZED';
}

/** A request whose token (or address) may not do what it asks. */
export class ForbiddenError extends BatonError {
  override readonly name = 'ForbiddenError';
  readonly code = 'FORBIDDEN';
}

/** A request whose Host header names none of the node's names (`[http] hosts`): a DNS-rebinding page's. */
export class UnknownHostError extends BatonError {
  override readonly name = 'UnknownHostError';
  readonly code = 'UNKNOWN_HOST';
}

/** A request whose headers and body did not all arrive within `[http] request_timeout_ms`. */
export class RequestTimeoutError extends BatonError {
  override readonly name = 'RequestTimeoutError';
  readonly code = 'REQUEST_TIMEOUT';
}

/** A route, or a thing a route names, that does not exist. */
export class NotFoundError extends BatonError {
  override readonly name = 'NotFoundError';
  readonly code = 'NOT_FOUND';
}

/** A configuration that cannot be used. `key` is the dotted path of the offending key, when there is one. */
export class ConfigError extends BatonError {
  override readonly name = 'ConfigError';
  readonly code = 'CONFIG_INVALID';
  readonly key: string | undefined;
  readonly file: string | undefined;

  constructor(message: string, options: { key?: string; file?: string; cause?: unknown } = {}) {
    const where = [options.file, options.key ? `key "${options.key}"` : undefined].filter(Boolean).join(', ');
    super(where ? `${where}: ${message}` : message, { cause: options.cause });
    this.key = options.key;
    this.file = options.file;
  }
}

/** A backend (store, Redis, coordination, another node) that could not be reached. */
export class BackendUnavailableError extends BatonError {
  override readonly name = 'BackendUnavailableError';
  readonly code = 'BACKEND_UNAVAILABLE';
  readonly backend: string;

  constructor(backend: string, message: string, options: { cause?: unknown } = {}) {
    const reason = options.cause instanceof Error ? ` (${options.cause.message})` : '';
    super(`${backend}: ${message}${reason}`, options);
    this.backend = backend;
  }

  override details(): Record<string, unknown> {
    return { backend: this.backend };
  }
}

/** Another process owns the embedded store and could not be reached through its HTTP address. */
export class StoreLockedError extends BatonError {
  override readonly name = 'StoreLockedError';
  readonly code = 'STORE_LOCKED';
  readonly pid: number;

  constructor(message: string, pid: number) {
    super(message);
    this.pid = pid;
  }
}

/** A node was asked to run with nothing configured: it would have nothing to do. */
export class NothingToRunError extends BatonError {
  override readonly name = 'NothingToRunError';
  readonly code = 'NOTHING_TO_RUN';
}

/** The node (or the part of it asked) is not running: starting, stopping or stopped. */
export class NotRunningError extends BatonError {
  override readonly name = 'NotRunningError';
  readonly code = 'NOT_RUNNING';
}

/** A queue name that is not configured. */
export class UnknownQueueError extends BatonError {
  override readonly name = 'UnknownQueueError';
  readonly code = 'UNKNOWN_QUEUE';
  readonly queue: string;
  readonly known: readonly string[];

  constructor(queue: string, known: readonly string[]) {
    super(`unknown queue "${queue}"; configured queues: ${known.length > 0 ? known.join(', ') : '(none)'}`);
    this.queue = queue;
    this.known = known;
  }

  override details(): Record<string, unknown> {
    return { queue: this.queue, queues: this.known };
  }
}

/** Error records that are not in a queue's error queue. */
export class UnknownErrorRecordError extends BatonError {
  override readonly name = 'UnknownErrorRecordError';
  readonly code = 'UNKNOWN_ERROR_RECORD';
  readonly queue: string;
  readonly ids: readonly string[];

  constructor(queue: string, ids: readonly string[]) {
    super(`no error record ${ids.join(', ')} in errors-${queue}`);
    this.queue = queue;
    this.ids = ids;
  }

  override details(): Record<string, unknown> {
    return { queue: this.queue, ids: this.ids };
  }
}

/** A workflow execution id that is not in the store. */
export class UnknownExecutionError extends BatonError {
  override readonly name = 'UnknownExecutionError';
  readonly code = 'UNKNOWN_EXECUTION';
  readonly execution: string;

  constructor(execution: string) {
    super(`unknown workflow execution "${execution}"`);
    this.execution = execution;
  }

  override details(): Record<string, unknown> {
    return { execution: this.execution };
  }
}

/** A workflow name that this node's config does not define. */
export class UnknownWorkflowError extends BatonError {
  override readonly name = 'UnknownWorkflowError';
  readonly code = 'UNKNOWN_WORKFLOW';
  readonly workflow: string;
  readonly known: readonly string[];

  constructor(workflow: string, known: readonly string[]) {
    super(
      `unknown workflow "${workflow}": ` +
        (known.length === 0
          ? 'no [workflows.<name>] table is defined'
          : `expected one of ${known.join(', ')}`),
    );
    this.workflow = workflow;
    this.known = known;
  }

  override details(): Record<string, unknown> {
    return { workflow: this.workflow, workflows: this.known };
  }
}

/** A task run id that is not in the store. */
export class UnknownTaskRunError extends BatonError {
  override readonly name = 'UnknownTaskRunError';
  readonly code = 'UNKNOWN_TASK';
  readonly run: string;

  constructor(run: string) {
    super(`unknown task run "${run}"`);
    this.run = run;
  }

  override details(): Record<string, unknown> {
    return { run: this.run };
  }
}

/** A node name that is not a live member of the group (e.g. `failover --to`). */
export class UnknownNodeError extends BatonError {
  override readonly name = 'UnknownNodeError';
  readonly code = 'UNKNOWN_NODE';
  readonly node: string;
  readonly known: readonly string[];

  constructor(node: string, known: readonly string[]) {
    super(
      `no live member "${node}" in the group; live members: ${known.length > 0 ? known.join(', ') : '(none)'}`,
    );
    this.node = node;
    this.known = known;
  }

  override details(): Record<string, unknown> {
    return { node: this.node, members: this.known };
  }
}

/** The event API of a node whose `[events] enabled = false`. */
export class EventsDisabledError extends BatonError {
  override readonly name = 'EventsDisabledError';
  readonly code = 'EVENTS_DISABLED';

  constructor() {
    super('events are disabled on this node ([events] enabled = false)');
  }
}

/** Group work (failover) asked of a node, or a config, that is not in a group. */
export class NotInGroupError extends BatonError {
  override readonly name = 'NotInGroupError';
  readonly code = 'NOT_IN_GROUP';
}

/** Primary-only work was asked of a node that is not the primary. */
export class NotPrimaryError extends BatonError {
  override readonly name = 'NotPrimaryError';
  readonly code = 'NOT_PRIMARY';
  readonly role: string;
  /** Name of the primary, when known. */
  readonly primary: string | undefined;
  /** The primary's HTTP address, when known. */
  readonly primaryAddress: string | undefined;

  constructor(role: string, primary: string | undefined, primaryAddress?: string) {
    super(
      primary
        ? `this node is ${role}: only the primary does this; the primary is ${primary}`
        : `this node is ${role}: only the primary does this, and no primary is known right now`,
    );
    this.role = role;
    this.primary = primary;
    this.primaryAddress = primaryAddress;
  }

  override details(): Record<string, unknown> {
    return {
      role: this.role,
      primary: this.primary ? { node: this.primary, address: this.primaryAddress ?? null } : null,
    };
  }
}

/** A write checked with assertPrimary() came from a node whose term is over: a newer primary exists. */
export class FencedError extends BatonError {
  override readonly name = 'FencedError';
  readonly code = 'FENCED';
  readonly term: number;
  readonly currentTerm: number | undefined;

  constructor(term: number, currentTerm: number | undefined) {
    super(
      `fenced: this node acts for term ${term}, but the group is at term ${currentTerm ?? 'unknown'}; the write is refused`,
    );
    this.term = term;
    this.currentTerm = currentTerm;
  }

  override details(): Record<string, unknown> {
    return { term: this.term, current_term: this.currentTerm ?? null };
  }
}

/** Records of a batch were taken back from its consumer (it was thought dead) before it committed. */
export class ClaimLostError extends BatonError {
  override readonly name = 'ClaimLostError';
  readonly code = 'CLAIM_LOST';
}

/** `make-migration` while migrations are pending: the diff would be against an old schema. */
export class PendingMigrationsError extends BatonError {
  override readonly name = 'PendingMigrationsError';
  readonly code = 'PENDING_MIGRATIONS';
  readonly pending: readonly string[];

  constructor(pending: readonly string[]) {
    super(`apply the pending migrations first (baton migrate): ${pending.join(', ')}`);
    this.pending = pending;
  }

  override details(): Record<string, unknown> {
    return { pending: this.pending };
  }
}

/**
 * A migration that `migrate` will not apply, or an applied one whose file changed: applying the others
 * would give a schema that no fresh database gets. The message names the files and says how to fix it.
 */
export class MigrationRefusedError extends BatonError {
  override readonly name = 'MigrationRefusedError';
  readonly code = 'MIGRATION_REFUSED';
}

/** A request body over `[http] body_limit_bytes`. */
export class PayloadTooLargeError extends BatonError {
  override readonly name = 'PayloadTooLargeError';
  readonly code = 'PAYLOAD_TOO_LARGE';
}

/** Too many requests from one caller (wrong tokens, a queue over its depth): try again after a while. */
export class TooManyRequestsError extends BatonError {
  override readonly name = 'TooManyRequestsError';
  readonly code = 'TOO_MANY_REQUESTS';
  readonly #retryAfterSeconds: number;

  constructor(message: string, retryAfterSeconds = RETRY_AFTER_SECONDS) {
    super(message);
    this.#retryAfterSeconds = retryAfterSeconds;
  }

  override get retryAfterSeconds(): number {
    return this.#retryAfterSeconds;
  }
}

/** Something registered as a component is not one. */
export class InvalidComponentError extends BatonError {
  override readonly name = 'InvalidComponentError';
  readonly code = 'INVALID_COMPONENT';
  readonly component: string;

  constructor(component: string, message: string) {
    super(`invalid component ${component}: ${message}`);
    this.component = component;
  }
}

/** A task module that exports nothing runnable. */
export class InvalidTaskError extends BatonError {
  override readonly name = 'InvalidTaskError';
  readonly code = 'INVALID_TASK';
}

/** A handler ran past its queue's `timeout_ms`. */
export class HandlerTimeoutError extends BatonError {
  override readonly name = 'HandlerTimeoutError';
  readonly code = 'HANDLER_TIMEOUT';
}

/** The handler failed on a whole batch run without savepoints: roll back, then isolate the bad records. */
export class BatchFailedError extends BatonError {
  override readonly name = 'BatchFailedError';
  readonly code = 'BATCH_FAILED';
  /** True when a record failed for good (its payload does not parse): running it again cannot help. */
  readonly permanent: boolean;

  constructor(message: string, options?: ErrorOptions & { permanent?: boolean }) {
    super(message, options);
    this.permanent = options?.permanent === true;
  }
}

/**
 * Work in progress was told to stop (the node is stopping, or stepped down): not the records' fault, so
 * their batch is given back without counting an attempt.
 */
export class WorkAbortedError extends BatonError {
  override readonly name: string = 'WorkAbortedError';
  readonly code = 'WORK_ABORTED';
}

/** The abort reason given to handlers still running when the shutdown deadline passes. */
export class NodeStoppingError extends WorkAbortedError {
  override readonly name = 'NodeStoppingError';
}

/** The abort reason of primary-only handlers when their node steps down. */
export class SteppedDownError extends WorkAbortedError {
  override readonly name = 'SteppedDownError';
}

/** A failure that is a defect, not the caller's: answered 500 and logged. */
export class InternalError extends BatonError {
  override readonly name = 'InternalError';
  readonly code = 'INTERNAL';
}

/** An answer of another node with a code this version does not know, or no Baton answer at all. */
export class RemoteError extends BatonError {
  override readonly name = 'RemoteError';
  readonly code = 'INTERNAL';
  /** The HTTP status the node answered. */
  readonly httpStatus: number;
  /** The code the node gave, when it gave one. */
  readonly remoteCode: string | undefined;

  constructor(message: string, httpStatus: number, remoteCode: string | undefined) {
    super(message);
    this.httpStatus = httpStatus;
    this.remoteCode = remoteCode;
  }

  override get status(): number {
    return this.httpStatus;
  }

  override get transient(): boolean {
    return [429, 502, 503, 504].includes(this.httpStatus);
  }
}

/** The body of an HTTP error answer. */
export function errorReply(error: BatonError): Record<string, unknown> {
  return { error: error.message, code: error.code, ...error.details() };
}

type Reply = Record<string, unknown>;

const text = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
const texts = (value: unknown): string[] => (Array.isArray(value) ? value.map(String) : []);
const count = (value: unknown): number => (typeof value === 'number' ? value : 0);

/** Rebuilds errors whose fields are more than a message; the others take the message alone. */
const REBUILD: Partial<Record<BatonErrorCode, (message: string, reply: Reply) => BatonError>> = {
  BACKEND_UNAVAILABLE: (message, reply) => {
    const backend = text(reply['backend']) ?? 'node';
    const prefix = `${backend}: `;
    return new BackendUnavailableError(
      backend,
      message.startsWith(prefix) ? message.slice(prefix.length) : message,
    );
  },
  UNKNOWN_QUEUE: (_message, reply) =>
    new UnknownQueueError(text(reply['queue']) ?? '', texts(reply['queues'])),
  UNKNOWN_ERROR_RECORD: (_message, reply) =>
    new UnknownErrorRecordError(text(reply['queue']) ?? '', texts(reply['ids'])),
  UNKNOWN_TASK: (_message, reply) => new UnknownTaskRunError(text(reply['run']) ?? ''),
  UNKNOWN_EXECUTION: (_message, reply) => new UnknownExecutionError(text(reply['execution']) ?? ''),
  UNKNOWN_WORKFLOW: (_message, reply) =>
    new UnknownWorkflowError(text(reply['workflow']) ?? '', texts(reply['workflows'])),
  UNKNOWN_NODE: (_message, reply) => new UnknownNodeError(text(reply['node']) ?? '', texts(reply['members'])),
  EVENTS_DISABLED: () => new EventsDisabledError(),
  NOT_PRIMARY: (_message, reply) => {
    const primary = reply['primary'] as Reply | null | undefined;
    return new NotPrimaryError(
      text(reply['role']) ?? 'secondary',
      text(primary?.['node']),
      text(primary?.['address']),
    );
  },
  FENCED: (_message, reply) =>
    new FencedError(
      count(reply['term']),
      typeof reply['current_term'] === 'number' ? reply['current_term'] : undefined,
    ),
  PENDING_MIGRATIONS: (_message, reply) => new PendingMigrationsError(texts(reply['pending'])),
  SQL_FAILED: (message, reply) => new StatementError(message, { sqlState: text(reply['sql_state']) }),
};

const SIMPLE: Partial<Record<BatonErrorCode, new (message: string) => BatonError>> = {
  BAD_REQUEST: BadRequestError,
  INVALID_EVENT: InvalidEventError,
  UNAUTHORIZED: UnauthorizedError,
  FORBIDDEN: ForbiddenError,
  UNKNOWN_HOST: UnknownHostError,
  REQUEST_TIMEOUT: RequestTimeoutError,
  NOT_FOUND: NotFoundError,
  NOT_IN_GROUP: NotInGroupError,
  NOT_RUNNING: NotRunningError,
  PAYLOAD_TOO_LARGE: PayloadTooLargeError,
  TOO_MANY_REQUESTS: TooManyRequestsError,
  WORK_ABORTED: WorkAbortedError,
  CLAIM_LOST: ClaimLostError,
  MIGRATION_REFUSED: MigrationRefusedError,
};

/**
 * The typed error of a node's error answer (status and parsed JSON body), as the node threw it. An answer
 * with an unknown code (or none) becomes a RemoteError that keeps the status.
 */
export function errorFromReply(status: number, body: unknown, origin: string): BatonError {
  const reply: Reply = typeof body === 'object' && body !== null ? (body as Reply) : {};
  const message = text(reply['error']) ?? `HTTP ${status}`;
  const code = text(reply['code']);
  if (code !== undefined && code in ERROR_CODES) {
    const known = code as BatonErrorCode;
    const rebuild = REBUILD[known];
    if (rebuild) return rebuild(message, reply);
    const Simple = SIMPLE[known];
    if (Simple) return new Simple(message);
  }
  return new RemoteError(`the node at ${origin} answered ${status}: ${message}`, status, code);
}

/** Normalises anything thrown into an Error, keeping the original as `cause`. */
export function coerceError(value: unknown): Error {
  if (value instanceof Error) return value;
  const text = typeof value === 'string' ? value : safeStringify(value);
  return new Error(text, { cause: value });
}

/**
 * `error` as a StatementError when it is a statement the database refused: the driver's own error (with
 * its SQLSTATE), or drizzle's report of one ("Failed query: … params: …", the database's error only as its
 * cause). The message says the database's reason, SQLSTATE and detail first, then the statement without its
 * parameters (they hold records and may be large). Undefined for anything else.
 */
export function statementErrorOf(error: unknown): StatementError | undefined {
  const drizzle = isDrizzleQueryError(error);
  const reason = drizzle ? error.cause : error;
  if (!(reason instanceof Error) || reason instanceof BatonError) return undefined;
  const sqlState = textField(reason, 'code');
  if (!drizzle && (sqlState === undefined || !SQLSTATE.test(sqlState))) return undefined;
  const detail = textField(reason, 'detail');
  const message =
    reason.message +
    (sqlState === undefined ? '' : ` (SQLSTATE ${sqlState})`) +
    (detail === undefined ? '' : `. ${detail}`) +
    (drizzle ? `\nFailed query: ${clippedStatement(error.query)}` : '');
  return new StatementError(message, { sqlState, cause: error });
}

/**
 * drizzle's DrizzleQueryError, known by its shape (this layer does not import drizzle): the statement, its
 * parameters, and the driver's error as its cause.
 */
function isDrizzleQueryError(error: unknown): error is Error & { query: string; cause: Error } {
  return (
    error instanceof Error &&
    error.message.startsWith('Failed query: ') &&
    typeof Reflect.get(error, 'query') === 'string' &&
    Array.isArray(Reflect.get(error, 'params')) &&
    error.cause instanceof Error
  );
}

/** A statement's text as error messages quote it: never its parameters (records, tokens), at most 300 characters. */
export function clippedStatement(statement: string): string {
  const oneLine = statement.replace(/\s+/g, ' ').trim();
  return oneLine.length > 300 ? `${oneLine.slice(0, 300)}…` : oneLine;
}

/** Five digits and capitals, one digit at least: a SQLSTATE (42P01, HV000), not a Node code such as EPIPE. */
const SQLSTATE = /^(?=.*\d)[0-9A-Z]{5}$/;

function textField(error: Error, key: 'code' | 'detail'): string | undefined {
  const value: unknown = Reflect.get(error, key);
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

/**
 * One line that says what went wrong, for logs and error queues. A statement the database refused is
 * described by the database's reason and SQLSTATE, never by drizzle's "Failed query … params: …".
 */
export function describeError(value: unknown): string {
  const error = statementErrorOf(value) ?? coerceError(value);
  const text = error.message.length > 0 ? `${error.name}: ${error.message}` : error.name;
  // Messages often quote the bad input, which may hold NUL: PostgreSQL text cannot store it.
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\\u0000') : text;
}

function safeStringify(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
