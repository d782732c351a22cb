// Baton's outbox: records added to a store queue inside the application's own transaction, on the
// PostgreSQL server the store lives on. They become visible to Baton's consumers when, and only when, that
// transaction commits; a rollback leaves nothing. No Baton node needs to run in the process: the insert is
// one statement on the application's connection, and the NOTIFY it sends is delivered at the commit.
import { sql } from 'drizzle-orm';

import { QUEUE_NAME_PATTERN } from '../config/schema.js';
import { BadRequestError } from '../errors.js';
import { batonChannel, quotedSchema } from '../store/baton-schema.js';
import type { OutboxClient, OutboxDrizzle } from '../store/outbox-adapter.js';
import { executeInOutbox, outboxSchema } from '../store/outbox-adapter.js';
import { WAKEUP_CHANNEL } from './store-queue.js';

export type { OutboxClient, OutboxDrizzle };

export interface EnqueueOptions {
  /** Baton's schema on that server (`[store] schema`); default "baton". */
  readonly schema?: string | undefined;
  /** Not claimed before this many milliseconds after the commit's clock (the statement's `now()`). */
  readonly delayMs?: number | undefined;
  /** Not claimed before this time. */
  readonly runAt?: Date | undefined;
}

export type OutboxRecord = Buffer | Uint8Array | string;

/**
 * Inside the application's transaction `tx`: adds `records` to the store queue `queue`. They exist if and
 * only if `tx` commits; returns how many. `tx` must be the connection that runs the transaction (a pool
 * would run the insert in a transaction of its own).
 */
export async function enqueue(
  tx: OutboxClient | OutboxDrizzle,
  queue: string,
  records: readonly OutboxRecord[],
  options: EnqueueOptions = {},
): Promise<number> {
  const schema = outboxSchema(options.schema, 'enqueue');
  if (!QUEUE_NAME_PATTERN.test(queue))
    throw new BadRequestError(`enqueue: invalid queue name ${JSON.stringify(queue)}`);
  if (options.delayMs !== undefined && options.runAt !== undefined) {
    throw new BadRequestError('enqueue: give delayMs or runAt, not both');
  }
  if (options.delayMs !== undefined && !(Number.isFinite(options.delayMs) && options.delayMs >= 0)) {
    throw new BadRequestError(`enqueue: delayMs must be a number ≥ 0, got ${String(options.delayMs)}`);
  }
  if (options.runAt !== undefined && Number.isNaN(options.runAt.getTime())) {
    throw new BadRequestError('enqueue: runAt is an invalid date');
  }
  if (records.length === 0) return 0;
  const payloads = records.map((record) => Buffer.from(record));
  const delayMs = options.delayMs ?? null;
  const runAt = options.runAt?.toISOString() ?? null;
  // run_after: now() plus the delay, or the time (never before now()); then a NOTIFY for idle consumers,
  // which PostgreSQL delivers at the commit.
  const statement = sql`
    WITH inserted AS (
      INSERT INTO ${sql.raw(`${quotedSchema(schema)}.baton_queue_records`)} (queue, payload, run_after)
      SELECT ${queue}, p, CASE
          WHEN ${delayMs}::float8 IS NOT NULL THEN now() + ${delayMs}::float8 * interval '1 millisecond'
          WHEN ${runAt}::timestamptz IS NOT NULL THEN greatest(now(), ${runAt}::timestamptz)
          ELSE now() END
      FROM unnest(${sql.param(payloads)}::bytea[]) AS p
      RETURNING 1)
    SELECT count(*) AS n, pg_notify(${batonChannel(schema, WAKEUP_CHANNEL)}, ${queue}) FROM inserted`;
  await executeInOutbox(tx, statement);
  return payloads.length;
}
