// The one INSERT of records into a store queue, whoever writes them: a publish, a record enqueued in a
// caller's transaction (a schedule's tick, the outbox). In one statement it drops records whose idempotency
// id was seen within the queue's dedup window (the id's row in baton_queue_dedup is the check: unique per
// queue, so two writers of one id cannot both win), keeps each record's key when the queue is ordered (and
// gives a new key its turn in baton_queue_keys), and counts what it dropped. Writers without the node's
// config (the outbox) read the queue's settings from baton_queue_settings, which the nodes write.
import type { SQL } from 'drizzle-orm';
import { sql } from 'drizzle-orm';

import { quotedSchema } from '../store/baton-schema.js';
import { valueList } from '../util/per-record.js';
import type { QueueSettings } from './backend.js';
import { DEFAULT_QUEUE_SETTINGS } from './backend.js';
import { delayAt } from './delay.js';
import type { RecordOptions } from './record-options.js';

export interface InsertRecords {
  readonly queue: string;
  readonly records: readonly Buffer[];
  readonly options?: RecordOptions | undefined;
  /** The queue's settings as the node's config says; undefined: read from baton_queue_settings. */
  readonly settings?: QueueSettings | undefined;
  /** Baton's schema, for a statement on a connection whose search path does not hold it (the outbox). */
  readonly schema?: string | undefined;
  /** Adds the NOTIFY that wakes other nodes' consumers to the channel given (sent at the commit). */
  readonly notify?: SQL | undefined;
}

/**
 * The statement: returns one row with `n`, the records stored, and `dropped`, those dropped as duplicates
 * (of an id seen within the window, or of an earlier record of the same publish).
 */
export function insertRecordsStatement(spec: InsertRecords): SQL {
  const { queue, records, options = {} } = spec;
  const table = (name: string): SQL =>
    sql.raw(spec.schema === undefined ? name : `${quotedSchema(spec.schema)}.${name}`);
  const afterMs: Array<number | null> = [];
  const times: Array<string | null> = [];
  records.forEach((_, index) => {
    const delay = delayAt(options.delays, index);
    afterMs.push(delay && 'delayMs' in delay ? delay.delayMs : null);
    times.push(delay && 'runAt' in delay ? delay.runAt.toISOString() : null);
  });
  const keys = valueList(options.keys, records.length).map((key) => key ?? null);
  // A second record with an id already in this publish is a duplicate too: dropped here, as the table
  // could not tell (one statement cannot insert the same id twice).
  const seen = new Set<string>();
  const ids = valueList(options.ids, records.length).map((id) => {
    if (id === undefined) return null;
    if (seen.has(id)) return DUPLICATE;
    seen.add(id);
    return id;
  });
  const settings =
    spec.settings === undefined
      ? sql`SELECT coalesce((SELECT ordering = 'key' FROM ${table('baton_queue_settings')} WHERE queue = ${queue}), false) AS ordered,
               coalesce((SELECT dedup_window_ms FROM ${table('baton_queue_settings')} WHERE queue = ${queue}),
                        ${DEFAULT_QUEUE_SETTINGS.dedupWindowMs}::bigint) AS window_ms`
      : sql`SELECT ${spec.settings.ordering === 'key'}::boolean AS ordered, ${spec.settings.dedupWindowMs}::bigint AS window_ms`;
  const dedup = table('baton_queue_dedup');
  const keysTable = table('baton_queue_keys');
  return sql`
    WITH input AS (
      SELECT p, d, t, k, i, n
      FROM unnest(${sql.param([...records])}::bytea[], ${sql.param(afterMs)}::float8[],
                  ${sql.param(times)}::timestamptz[], ${sql.param(keys)}::text[], ${sql.param(ids)}::text[])
           WITH ORDINALITY AS u(p, d, t, k, i, n)),
    settings AS (${settings}),
    fresh AS (
      INSERT INTO ${dedup} AS seen (queue, id, expires_at)
      SELECT ${queue}, i, now() + window_ms * interval '1 millisecond' FROM input, settings
      WHERE i IS NOT NULL AND i <> ${DUPLICATE}
      ON CONFLICT (queue, id) DO UPDATE SET expires_at = excluded.expires_at WHERE seen.expires_at <= now()
      RETURNING id),
    kept AS (
      SELECT input.*, CASE WHEN settings.ordered THEN k END AS key FROM input, settings
      WHERE i IS NULL OR i IN (SELECT id FROM fresh)),
    turns AS (
      ${keyTurns(keysTable, sql`SELECT ${queue}, key FROM kept WHERE key IS NOT NULL GROUP BY key ORDER BY min(n)`)}
      RETURNING 1),
    inserted AS (
      INSERT INTO ${table('baton_queue_records')} (queue, payload, run_after, key)
      SELECT ${queue}, p, CASE
          WHEN d IS NOT NULL THEN now() + d * interval '1 millisecond'
          WHEN t IS NOT NULL THEN greatest(now(), t)
          ELSE now() END, key
      FROM kept ORDER BY n
      RETURNING 1),
    counted AS (
      INSERT INTO ${table('baton_queue_counts')} (queue, deduplicated)
      SELECT ${queue}, ${records.length}::bigint - (SELECT count(*) FROM kept)
      WHERE ${records.length}::bigint > (SELECT count(*) FROM kept))
    SELECT (SELECT count(*) FROM inserted)::int AS n,
           ${records.length}::int - (SELECT count(*) FROM kept)::int AS dropped${spec.notify ?? sql``}`;
}

/**
 * The INSERT that gives the keys of `keys` (rows of queue and key, in the order of their first record) their
 * turns in baton_queue_keys `table`: new keys in that order, so that the next claims read records in about
 * the order they were stored. An existing key keeps its row as it is: DO UPDATE … WHERE false locks it (so
 * that removeEmptyKeys skips it until the writer commits) without writing a new version of it.
 */
export function keyTurns(table: SQL, keys: SQL): SQL {
  return sql`INSERT INTO ${table} AS keys (queue, key) ${keys}
      ON CONFLICT (queue, key) DO UPDATE SET turn = keys.turn WHERE false`;
}

/** The id given to a record whose id came earlier in the same publish (never a valid id: see checkKey). */
const DUPLICATE = '\u0001duplicate';
