// The statement that appends events to the log, shared by the event log (in the store's transactions) and
// the outbox's sendEvent (in the application's). It takes the next offsets from the single head row, whose
// lock its transaction then holds until it ends, so appends commit one after another in offset order: the
// guarantee every reader of "offset > the last I saw" relies on. One statement also stamps the time,
// inserts the rows and sends the NOTIFY that wakes followers, which PostgreSQL delivers at the commit.
import { sql, type SQL } from 'drizzle-orm';

import { InternalError } from '../errors.js';
import { batonChannel, quotedSchema } from '../store/baton-schema.js';
import type { Row } from '../store/store.js';
import type { EventInput, StoredEvent } from './types.js';

/** The NOTIFY channel that carries the newest committed offset (named after Baton's schema: batonChannel). */
export const EVENTS_CHANNEL = 'baton_events';

export type NormalizedEvent = EventInput & { namespace: string };

/**
 * The append of `events`, in that order, to the log of Baton's schema `schema`. `qualified`: name the
 * tables with the schema (a connection that is not Baton's, whose search path does not end with it).
 */
export function appendStatement(
  events: readonly NormalizedEvent[],
  schema: string,
  options: { qualified: boolean },
): SQL {
  const table = (name: string): SQL => sql.raw(options.qualified ? `${quotedSchema(schema)}.${name}` : name);
  const column = <T>(pick: (event: NormalizedEvent) => T) => sql.param(events.map(pick));
  return sql`
      WITH h AS (
        UPDATE ${table('baton_event_head')}
        SET last_offset = last_offset + ${events.length},
            last_time = greatest(date_trunc('milliseconds', clock_timestamp()), last_time)
        WHERE id = 1 RETURNING last_offset, last_time),
      inserted AS (
        INSERT INTO ${table('baton_events')}
          ("offset", namespace, key, value, context, sender, create_time, client_id, client_seq)
        SELECT h.last_offset - ${events.length} + e.ordinality, e.namespace, e.key, e.value, e.context,
               e.sender, h.last_time, e.client_id, e.client_seq
        FROM h, unnest(
          ${column((event) => event.namespace)}::text[], ${column((event) => event.key)}::text[],
          ${column((event) => event.value ?? null)}::text[], ${column((event) => event.context ?? null)}::text[],
          ${column((event) => event.sender ?? null)}::text[], ${column((event) => event.clientId ?? null)}::text[],
          ${column((event) => event.seq ?? null)}::bigint[]
        ) WITH ORDINALITY AS e(namespace, key, value, context, sender, client_id, client_seq, ordinality)
        RETURNING 1)
      SELECT last_offset, (extract(epoch FROM last_time) * 1000)::float8 AS create_ms,
             pg_notify(${batonChannel(schema, EVENTS_CHANNEL)}, last_offset::text) AS notified
      FROM h`;
}

/** The events as `appendStatement` stored them, from the row it returned. */
export function appendedEvents(head: Row | undefined, events: readonly NormalizedEvent[]): StoredEvent[] {
  if (!head) throw new InternalError("the event log has no head row: were Baton's migrations applied?");
  const first = Number(head['last_offset']) - events.length + 1;
  const createTime = Number(head['create_ms']);
  return events.map((event, index) => ({
    offset: first + index,
    namespace: event.namespace,
    key: event.key,
    value: event.value ?? null,
    context: event.context ?? null,
    sender: event.sender ?? null,
    createTime,
  }));
}
