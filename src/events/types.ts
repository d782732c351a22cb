// Events: what producers send, what the log stores, and how they are asked for. Shared by the event log,
// the HTTP API, the client and the rule engine. Validation lives here so that every entry point refuses
// the same inputs with the same words.
import { InvalidEventError } from '../errors.js';

export { InvalidEventError };

export const DEFAULT_NAMESPACE = 'default';
/** Namespaces end up in URLs, logs and listener names: a safe alphabet, like queue names. */
export const NAMESPACE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$/;
export const MAX_KEY_LENGTH = 1024;
export const MAX_SENDER_LENGTH = 256;
export const MAX_VALUE_BYTES = 1_048_576;
export const MAX_LISTENER_NAME_LENGTH = 256;
/** The sender of the node's own events (task and execution states): the rule engine trusts them. */
export const NODE_SENDER = 'baton';

/** An event as a producer sends it. The log assigns the offset and the time. */
export interface EventInput {
  readonly key: string;
  readonly value?: string | null | undefined;
  /** A JSON text (e.g. the task run that sent the event). */
  readonly context?: string | null | undefined;
  /** Default: "default". */
  readonly namespace?: string | undefined;
  readonly sender?: string | null | undefined;
  /** Idempotent producers: the same (clientId, seq) twice is stored once. */
  readonly clientId?: string | undefined;
  readonly seq?: number | undefined;
}

/** An event in the log. `offset` is global and increases; `createTime` is milliseconds since the epoch. */
export interface StoredEvent {
  readonly offset: number;
  readonly namespace: string;
  readonly key: string;
  readonly value: string | null;
  readonly context: string | null;
  readonly sender: string | null;
  readonly createTime: number;
}

/** The outcome of one sent event: the stored event, and whether it had been stored before (a resend). */
export interface AppendedEvent extends StoredEvent {
  readonly duplicate: boolean;
}

/** Which events to read. Offsets: `after` is exclusive, `to` inclusive; no namespace means every namespace. */
export interface EventQuery {
  readonly namespace?: string | undefined;
  /** Only these keys; empty or absent: any key. */
  readonly keys?: readonly string[] | undefined;
  readonly sender?: string | undefined;
  readonly after?: number | undefined;
  readonly to?: number | undefined;
  readonly limit?: number | undefined;
}

export function assertNamespace(namespace: string, where = 'namespace'): void {
  if (!NAMESPACE_PATTERN.test(namespace)) {
    throw new InvalidEventError(
      `${where}: invalid namespace ${JSON.stringify(namespace.slice(0, 140))}: expected 1 to 128 letters, ` +
        'digits, "_", ".", ":", "/" or "-", starting with a letter or digit',
    );
  }
}

/** Checks one event and returns it with its namespace filled in. `where` names it in the message. */
export function normalizeEvent(input: EventInput, where = 'event'): EventInput & { namespace: string } {
  if (typeof input !== 'object' || input === null) {
    throw new InvalidEventError(`${where}: expected an object with at least a "key"`);
  }
  const namespace = input.namespace ?? DEFAULT_NAMESPACE;
  if (typeof namespace !== 'string') throw new InvalidEventError(`${where}.namespace: expected a string`);
  assertNamespace(namespace, `${where}.namespace`);
  checkText(input.key, `${where}.key`, { required: true, maxLength: MAX_KEY_LENGTH });
  checkText(input.value, `${where}.value`, { maxBytes: MAX_VALUE_BYTES });
  checkText(input.sender, `${where}.sender`, { maxLength: MAX_SENDER_LENGTH });
  checkText(input.context, `${where}.context`, { maxBytes: MAX_VALUE_BYTES });
  if (typeof input.context === 'string') {
    try {
      JSON.parse(input.context);
    } catch {
      throw new InvalidEventError(`${where}.context: expected a JSON text`);
    }
  }
  if ((input.clientId === undefined) !== (input.seq === undefined)) {
    throw new InvalidEventError(
      `${where}: a client id (client_id over HTTP) and seq go together (idempotent producers)`,
    );
  }
  if (input.clientId !== undefined) {
    checkText(input.clientId, `${where}.client_id`, { required: true, maxLength: MAX_SENDER_LENGTH });
    if (!Number.isSafeInteger(input.seq) || (input.seq as number) < 0) {
      throw new InvalidEventError(`${where}.seq: expected an integer >= 0`);
    }
  }
  return { ...input, namespace };
}

/**
 * Checks the sender of events that come from outside the node (`where` names it): any text the log takes but
 * the node's own.
 */
export function checkProducerSender(sender: unknown, where: string): void {
  checkText(sender, where, { maxLength: MAX_SENDER_LENGTH });
  if (sender === NODE_SENDER) {
    throw new InvalidEventError(`${where}: "${NODE_SENDER}" is reserved for the node's own events`);
  }
}

/** Checks the parts of a query that come from users (keys, namespace, offsets, limit). */
export function checkQuery(query: EventQuery): void {
  if (query.namespace !== undefined) assertNamespace(query.namespace);
  for (const [index, key] of (query.keys ?? []).entries()) {
    checkText(key, `keys[${index}]`, { required: true, maxLength: MAX_KEY_LENGTH });
  }
  checkText(query.sender, 'sender', { maxLength: MAX_SENDER_LENGTH });
  for (const [name, value] of [
    ['from', query.after],
    ['to', query.to],
  ] as const) {
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) {
      throw new InvalidEventError(`${name}: expected an offset (an integer >= 0)`);
    }
  }
  if (query.limit !== undefined && (!Number.isSafeInteger(query.limit) || query.limit < 1)) {
    throw new InvalidEventError('limit: expected a positive integer');
  }
}

export function checkListenerName(name: string): void {
  checkText(name, 'listener name', { required: true, maxLength: MAX_LISTENER_NAME_LENGTH });
}

function checkText(
  value: unknown,
  where: string,
  limits: { required?: boolean; maxLength?: number; maxBytes?: number },
): void {
  if (value === undefined || value === null) {
    if (limits.required) throw new InvalidEventError(`${where}: required: expected a non-empty string`);
    return;
  }
  if (typeof value !== 'string') throw new InvalidEventError(`${where}: expected a string`);
  if (limits.required && value.length === 0) {
    throw new InvalidEventError(`${where}: expected a non-empty string`);
  }
  if (limits.maxLength !== undefined && value.length > limits.maxLength) {
    throw new InvalidEventError(`${where}: longer than ${limits.maxLength} characters`);
  }
  if (limits.maxBytes !== undefined && Buffer.byteLength(value) > limits.maxBytes) {
    throw new InvalidEventError(`${where}: larger than ${limits.maxBytes} bytes`);
  }
  // PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
  if (value.includes('\u0000')) throw new InvalidEventError(`${where}: contains a NUL character`);
  // A lone surrogate (a JSON "\ud800" escape) is no Unicode text: stored as UTF-8 it would become U+FFFD.
  const lone = LONE_SURROGATE.exec(value);
  if (lone) {
    throw new InvalidEventError(
      `${where}: holds a lone surrogate (\\u${lone[0].charCodeAt(0).toString(16)} at character ${lone.index}): not Unicode text`,
    );
  }
}

/** With the u flag, \p{Cs} matches only surrogates that are not half of a pair. */
const LONE_SURROGATE = /\p{Cs}/u;

/** A named listener's lag (see EventLog.listenerLags). */
export interface ListenerLag {
  readonly namespace: string;
  readonly name: string;
  /** Offsets between the listener's and the head. */
  readonly lag: number;
  /** Events of its namespace after its offset, counted when asked, up to the cap. */
  readonly eventsBehind?: number;
  /** True when the count stopped at the cap: there are at least that many. */
  readonly eventsBehindCapped?: boolean;
}

/** A count of events, exact up to a cap. */
export interface EventCount {
  readonly count: number;
  /** True when counting stopped at the cap: there are at least `count`. */
  readonly capped: boolean;
}
