// Events on the wire (HTTP answers, SSE data, the CLI's JSON): the stored event as JSON with camelCase
// fields, `createTime` in milliseconds since the epoch, and its parsing back on the client's side.
import type { AppendedEvent, StoredEvent } from './types.js';

export interface EventJson {
  offset: number;
  namespace: string;
  key: string;
  value: string | null;
  context: string | null;
  sender: string | null;
  createTime: number;
  duplicate?: boolean;
}

export function eventJson(event: StoredEvent | AppendedEvent): EventJson {
  const json: EventJson = {
    offset: event.offset,
    namespace: event.namespace,
    key: event.key,
    value: event.value,
    context: event.context,
    sender: event.sender,
    createTime: event.createTime,
  };
  if ('duplicate' in event) json.duplicate = event.duplicate;
  return json;
}

/** Reads an event sent by a node; throws on anything that is not one. */
export function parseEvent(value: unknown): StoredEvent {
  if (typeof value !== 'object' || value === null) throw new TypeError('expected an event object');
  const row = value as Record<string, unknown>;
  const offset = row['offset'];
  const createTime = row['createTime'];
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset))
    throw new TypeError('event without an offset');
  if (typeof row['key'] !== 'string' || typeof row['namespace'] !== 'string') {
    throw new TypeError(`event ${offset} without a key or namespace`);
  }
  return {
    offset,
    namespace: row['namespace'],
    key: row['key'],
    value: nullableString(row['value']),
    context: nullableString(row['context']),
    sender: nullableString(row['sender']),
    createTime: typeof createTime === 'number' ? createTime : Number(createTime),
  };
}

export function parseAppendedEvent(value: unknown): AppendedEvent {
  const event = parseEvent(value);
  const duplicate = (value as Record<string, unknown>)['duplicate'] === true;
  return { ...event, duplicate };
}

function nullableString(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}
