// The errors a caller of Baton can act on. Each has a stable `code`, keeps its `cause`, and carries the
// fields that say what failed (a config key, a queue, a backend). Anything else is an internal bug.

export type BatonErrorCode =
  | 'CONFIG_INVALID'
  | 'BACKEND_UNAVAILABLE'
  | 'NOT_PRIMARY'
  | 'FENCED'
  | 'HANDLER_FAILED'
  | 'INVALID_COMPONENT'
  | 'UNKNOWN_QUEUE'
  | 'STORE_LOCKED'
  | 'NOTHING_TO_RUN'
  | 'INVALID_EVENT'
  | 'UNKNOWN_TASK';

export abstract class BatonError extends Error {
  abstract readonly code: BatonErrorCode;
}

/** A bad event or event query (key, namespace, offset, …): the HTTP API answers 400 with its message. */
export class InvalidEventError extends BatonError {
  override readonly name = 'InvalidEventError';
  readonly code = 'INVALID_EVENT';
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

/** A backend (store, Redis, coordination) that could not be reached. */
export class BackendUnavailableError extends BatonError {
  override readonly name = 'BackendUnavailableError';
  readonly code = 'BACKEND_UNAVAILABLE';
  readonly backend: string;

  constructor(backend: string, message: string, options: { cause?: unknown } = {}) {
    const reason = options.cause instanceof Error ? ` (${options.cause.message})` : '';
    super(`${backend}: ${message}${reason}`, options);
    this.backend = backend;
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

/** A node was asked to run with no queue configured: it would have nothing to do. */
export class NothingToRunError extends BatonError {
  override readonly name = 'NothingToRunError';
  readonly code = 'NOTHING_TO_RUN';
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
}

/** A handler threw while processing a record. `position` is the record's index in its batch. */
export class HandlerError extends BatonError {
  override readonly name = 'HandlerError';
  readonly code = 'HANDLER_FAILED';
  readonly queue: string;
  readonly position: number | undefined;

  constructor(queue: string, message: string, options: { position?: number; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.queue = queue;
    this.position = options.position;
  }
}

/** Primary-only work was asked of a node that is not the primary. */
export class NotPrimaryError extends BatonError {
  override readonly name = 'NotPrimaryError';
  readonly code = 'NOT_PRIMARY';
  readonly role: string;
  /** Name of the primary, when known. */
  readonly primary: string | undefined;

  constructor(role: string, primary: string | undefined) {
    super(`this node is ${role}, not primary${primary ? `; the primary is ${primary}` : ''}`);
    this.role = role;
    this.primary = primary;
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

/**
 * Work in progress was told to stop (the node is stopping, or stepped down): not the records' fault, so
 * their batch is given back without counting an attempt.
 */
export class WorkAbortedError extends Error {
  override readonly name: string = 'WorkAbortedError';
}

/** The abort reason given to handlers still running when the shutdown deadline passes. */
export class NodeStoppingError extends WorkAbortedError {
  override readonly name = 'NodeStoppingError';
}

/** The abort reason of primary-only handlers when their node steps down. */
export class SteppedDownError extends WorkAbortedError {
  override readonly name = 'SteppedDownError';
}

/** Normalises anything thrown into an Error, keeping the original as `cause`. */
export function coerceError(value: unknown): Error {
  if (value instanceof Error) return value;
  const text = typeof value === 'string' ? value : safeStringify(value);
  return new Error(text, { cause: value });
}

/** One line that says what went wrong, for logs and error queues. */
export function describeError(value: unknown): string {
  const error = coerceError(value);
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
