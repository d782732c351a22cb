// Queues and error records on the wire (GET /v1/queues, the error queue routes, the CLI's --json), in both
// directions: `…Json` writes what a node answers, the schemas read it back on the client's side.
import { z } from 'zod';

import type { ErrorRecord, QueueInfo } from './backend.js';
import { errorQueueName } from './backend.js';
import type { CountersByQueue } from './processor.js';

export function queueJson(queue: QueueInfo): Record<string, unknown> {
  return {
    name: queue.name,
    backend: queue.backend,
    depth: queue.depth,
    delayed: queue.delayed,
    delayed_capped: queue.delayedCapped === true,
    in_flight: queue.inFlight,
    processed: queue.processed ?? null,
    failed: queue.failed ?? null,
    errors: queue.errors,
    deduplicated: queue.deduplicated ?? 0,
    error_queue: errorQueueName(queue.name),
  };
}

const counter = z
  .number()
  .nullable()
  .transform((value) => value ?? undefined);

export const queueSchema = z
  .object({
    name: z.string(),
    backend: z.enum(['store', 'redis', 'postgres']),
    depth: z.number(),
    // Absent from the answers of nodes older than delayed records.
    delayed: z.number().default(0),
    delayed_capped: z.boolean().default(false),
    in_flight: z.number(),
    processed: counter,
    failed: counter,
    errors: z.number(),
    // Absent from the answers of nodes older than idempotency ids.
    deduplicated: z.number().default(0),
  })
  .transform((queue): QueueInfo => ({
    name: queue.name,
    backend: queue.backend,
    depth: queue.depth,
    delayed: queue.delayed,
    ...(queue.delayed_capped ? { delayedCapped: true } : {}),
    inFlight: queue.in_flight,
    processed: queue.processed,
    failed: queue.failed,
    errors: queue.errors,
    deduplicated: queue.deduplicated,
  }));

export const queuesReply = z.object({ queues: z.array(queueSchema) });

/** One node's counters per queue (GET /v1/queues/counters): what a command sums over the live members. */
export function countersJson(counters: CountersByQueue): Record<string, unknown> {
  return {
    queues: [...counters].map(([name, { processed, failed }]) => ({ name, processed, failed })),
  };
}

export const countersReply = z
  .object({ queues: z.array(z.object({ name: z.string(), processed: z.number(), failed: z.number() })) })
  .transform(
    (reply): CountersByQueue =>
      new Map(reply.queues.map(({ name, processed, failed }) => [name, { processed, failed }])),
  );

/** An error record: the payload as base64, and as text too when it is valid UTF-8. */
export function errorRecordJson(record: ErrorRecord): Record<string, unknown> {
  return {
    id: record.id,
    attempts: record.attempts,
    error: record.error,
    failed_at: record.failedAt.toISOString(),
    enqueued_at: record.enqueuedAt.toISOString(),
    payload_base64: record.payload.toString('base64'),
    payload_text: utf8OrNull(record.payload),
  };
}

export const errorsReply = z
  .object({
    queue: z.string(),
    errors: z.array(
      z.object({
        id: z.string(),
        attempts: z.number(),
        error: z.string(),
        failed_at: z.iso.datetime(),
        enqueued_at: z.iso.datetime(),
        payload_base64: z.base64(),
      }),
    ),
  })
  .transform((reply): ErrorRecord[] =>
    reply.errors.map((record) => ({
      id: record.id,
      queue: reply.queue,
      payload: Buffer.from(record.payload_base64, 'base64'),
      attempts: record.attempts,
      error: record.error,
      failedAt: new Date(record.failed_at),
      enqueuedAt: new Date(record.enqueued_at),
    })),
  );

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function utf8OrNull(bytes: Buffer): string | null {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return null;
  }
}
