// Baton's outbox for the event log: events appended inside the application's own transaction, on the
// PostgreSQL server the store lives on. They exist, with their offsets, if and only if that transaction
// commits. No Baton node needs to run in the process: the append is the event log's own statement, run on
// the application's connection.
//
// That statement locks the log's head row until the application's transaction ends, as every append does:
// appends commit in offset order, so no reader can see an offset while a lower one is still to commit. The
// price is that every other append waits for the application's commit: send events last, just before it.
import { InvalidEventError } from '../errors.js';
import type { OutboxClient, OutboxDrizzle } from '../store/outbox-adapter.js';
import { executeInOutbox, outboxSchema } from '../store/outbox-adapter.js';
import type { NormalizedEvent } from './append.js';
import { appendedEvents, appendStatement } from './append.js';
import type { StoredEvent } from './types.js';
import { checkProducerSender, normalizeEvent } from './types.js';

/** An event as the application sends it; the log assigns the offset and the time. */
export interface OutboxEvent {
  readonly key: string;
  readonly value?: string | null | undefined;
  /** JSON text, or a value stored as its JSON text. */
  readonly context?: string | Record<string, unknown> | readonly unknown[] | null | undefined;
  /** Default: "default". */
  readonly namespace?: string | undefined;
}

export interface SendEventOptions {
  /** Baton's schema on that server (`[store] schema`); default "baton". */
  readonly schema?: string | undefined;
  /** Stamped on the events; default "outbox". "baton" is reserved for the node's own events. */
  readonly sender?: string | undefined;
}

/** The sender of outbox events unless the application names one. */
export const OUTBOX_SENDER = 'outbox';

const FIELDS: ReadonlySet<string> = new Set(['key', 'value', 'context', 'namespace']);

/**
 * Inside the application's transaction `tx`: appends one event, or several in the order given, to the event
 * log. They exist if and only if `tx` commits, and are returned as stored (their offsets and time hold once
 * it has). `tx` must be the connection that runs the transaction (a pool would run the append in a
 * transaction of its own). Every other append to the log waits until `tx` ends: send events last.
 */
export async function sendEvent(
  tx: OutboxClient | OutboxDrizzle,
  event: OutboxEvent,
  options?: SendEventOptions,
): Promise<StoredEvent>;
export async function sendEvent(
  tx: OutboxClient | OutboxDrizzle,
  events: readonly OutboxEvent[],
  options?: SendEventOptions,
): Promise<StoredEvent[]>;
export async function sendEvent(
  tx: OutboxClient | OutboxDrizzle,
  input: OutboxEvent | readonly OutboxEvent[],
  options: SendEventOptions = {},
): Promise<StoredEvent | StoredEvent[]> {
  const schema = outboxSchema(options.schema, 'sendEvent');
  const sender = options.sender ?? OUTBOX_SENDER;
  checkProducerSender(sender, 'sendEvent: sender');
  const single = !Array.isArray(input);
  const inputs: readonly unknown[] = single ? [input] : input;
  const events = inputs.map((item, index) =>
    outboxEvent(item, sender, single ? 'event' : `events[${index}]`),
  );
  if (events.length === 0) return [];
  const [head] = await executeInOutbox(tx, appendStatement(events, schema, { qualified: true }));
  const stored = appendedEvents(head, events);
  return single ? (stored[0] as StoredEvent) : stored;
}

/** Checks one event as the HTTP API does (the same checks, the same words) and fills in its defaults. */
function outboxEvent(item: unknown, sender: string, where: string): NormalizedEvent {
  if (typeof item !== 'object' || item === null || Array.isArray(item)) {
    throw new InvalidEventError(`${where}: expected an object with at least a "key"`);
  }
  const unknown = Object.keys(item).find((field) => !FIELDS.has(field));
  if (unknown !== undefined) {
    throw new InvalidEventError(`${where}.${unknown}: unknown field; known: ${[...FIELDS].join(', ')}`);
  }
  const { key, value, context, namespace } = item as OutboxEvent;
  return normalizeEvent(
    {
      key,
      value: value ?? null,
      context:
        context === undefined || context === null || typeof context === 'string'
          ? context
          : JSON.stringify(context),
      namespace,
      sender,
    },
    where,
  );
}
