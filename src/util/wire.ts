// The JSON shapes that Baton prints and serves (HTTP answers and the CLI's --json), in one place so the two
// cannot drift: snake_case fields, bytes as base64 or PostgreSQL hex text, big integers as strings.
import type { QueueInfo } from '../node/admin.js';
import type { ErrorRecord } from '../queue/backend.js';
import { errorQueueName } from '../queue/backend.js';

export function queueJson(queue: QueueInfo): Record<string, unknown> {
  return {
    name: queue.name,
    backend: queue.backend,
    depth: queue.depth,
    in_flight: queue.inFlight,
    processed: queue.processed ?? null,
    failed: queue.failed ?? null,
    errors: queue.errors,
    error_queue: errorQueueName(queue.name),
  };
}

/** An error record: the payload as base64, and as text too when it is valid UTF-8. */
export function errorJson(record: ErrorRecord): Record<string, unknown> {
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

/** A row of a SQL result. */
export function rowJson(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(row)) out[key] = valueJson(value);
  return out;
}

function valueJson(value: unknown): unknown {
  if (value instanceof Uint8Array) {
    return `\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`;
  }
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(valueJson);
  return value;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function utf8OrNull(bytes: Buffer): string | null {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return null;
  }
}
