// Events on the wire (HTTP answers, SSE data, the CLI's JSON), in both directions: eventJson writes the
// stored event with snake_case fields and `create_time` in milliseconds since the epoch; the schemas read
// what a node sent back into the event types on the client's side.
import { z } from 'zod';

import type { AppendedEvent, EventInput, StoredEvent } from './types.js';

export interface EventJson {
  offset: number;
  namespace: string;
  key: string;
  value: string | null;
  context: string | null;
  sender: string | null;
  create_time: number;
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
    create_time: event.createTime,
  };
  if ('duplicate' in event) json.duplicate = event.duplicate;
  return json;
}

/** An event as a producer sends it over HTTP (POST /v1/events). */
export function eventInputJson(input: EventInput): Record<string, unknown> {
  const { clientId, ...rest } = input;
  return clientId === undefined ? { ...rest } : { ...rest, client_id: clientId };
}

const offset = z.number().int().min(0);

export const eventSchema = z
  .object({
    offset,
    namespace: z.string(),
    key: z.string(),
    value: z.string().nullable(),
    context: z.string().nullable(),
    sender: z.string().nullable(),
    create_time: z.number(),
    duplicate: z.boolean().optional(),
  })
  .transform((event): AppendedEvent => ({
    offset: event.offset,
    namespace: event.namespace,
    key: event.key,
    value: event.value,
    context: event.context,
    sender: event.sender,
    createTime: event.create_time,
    duplicate: event.duplicate === true,
  }));

export const eventsReply = z.object({ events: z.array(eventSchema) });
export const countReply = z.object({ count: z.number().int().min(0), capped: z.boolean().optional() });
export const offsetReply = z.object({ offset });
export const listenerOffsetReply = z.object({ offset: offset.nullable() });
export const listenersReply = z.object({
  listeners: z.array(
    z.object({
      namespace: z.string(),
      name: z.string(),
      lag: z.number(),
      events_behind: z.number().optional(),
      events_behind_capped: z.boolean().optional(),
    }),
  ),
});

/** Reads one event of an SSE stream; throws on anything that is not one. */
export function parseEvent(value: unknown): StoredEvent {
  const { duplicate: _ignored, ...event } = eventSchema.parse(value);
  return event;
}
