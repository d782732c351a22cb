// Baton's outbox: records added to a store queue inside the application's own transaction, on the
// PostgreSQL server the store lives on. They become visible to Baton's consumers when, and only when, that
// transaction commits; a rollback leaves nothing. No Baton node needs to run in the process: the insert is
// one statement on the application's connection, and the NOTIFY it sends is delivered at the commit.
import { sql } from 'drizzle-orm';

import { QUEUE_NAME_PATTERN } from '../config/schema.js';
import { BadRequestError } from '../errors.js';
import { batonChannel } from '../store/baton-schema.js';
import type { OutboxClient, OutboxDrizzle } from '../store/outbox-adapter.js';
import { executeInOutbox, outboxSchema } from '../store/outbox-adapter.js';
import { checkPerRecord } from './record-options.js';
import { insertRecordsStatement } from './store-insert.js';
import { WAKEUP_CHANNEL } from './store-queue.js';

export type { OutboxClient, OutboxDrizzle };

export interface EnqueueOptions {
  /** Baton's schema on that server (`[store] schema`); default "baton". */
  readonly schema?: string | undefined;
  /** Not claimed before this many milliseconds after the commit's clock (the statement's `now()`). */
  readonly delayMs?: number | undefined;
  /** Not claimed before this time. */
  readonly runAt?: Date | undefined;
  /** The key of every record (a queue with ordering = "key" keeps each key's records in order). */
  readonly key?: string | undefined;
  /** The key of each record, one per record (instead of `key`). */
  readonly keys?: readonly (string | undefined)[] | undefined;
  /** The idempotency id of each record, one per record: an id seen within the queue's dedup window is dropped. */
  readonly ids?: readonly (string | undefined)[] | undefined;
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
  if (options.key !== undefined && options.keys !== undefined) {
    throw new BadRequestError('enqueue: give key or keys, not both');
  }
  if (records.length === 0) return 0;
  const payloads = records.map((record) => Buffer.from(record));
  const delay =
    options.delayMs !== undefined && options.delayMs > 0
      ? { delayMs: Math.ceil(options.delayMs) }
      : options.runAt !== undefined
        ? { runAt: options.runAt }
        : undefined;
  const keys = checkPerRecord(options.key ?? options.keys, payloads.length, 'enqueue: keys');
  const ids = checkPerRecord(options.ids, payloads.length, 'enqueue: ids');
  // The queue's ordering and dedup window are read from what its nodes wrote (baton_queue_settings); the
  // NOTIFY for idle consumers is delivered at the commit.
  const statement = insertRecordsStatement({
    queue,
    records: payloads,
    options: { ...(delay ? { delays: delay } : {}), keys, ids },
    schema,
    notify: sql`, pg_notify(${batonChannel(schema, WAKEUP_CHANNEL)}, ${queue})`,
  });
  await executeInOutbox(tx, statement);
  return payloads.length;
}
