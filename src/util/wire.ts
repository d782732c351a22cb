// The JSON shapes that Baton prints and serves (HTTP answers and the CLI's --json), in one place so the two
// cannot drift: snake_case fields, bytes as base64 or PostgreSQL hex text, big integers as strings.
import type { Member } from '../cluster/types.js';
import type { ComponentStatus } from '../components/supervisor.js';
import type { QueueInfo } from '../node/admin.js';
import type { GroupStatus } from '../cluster/types.js';
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

/** The group as one node sees it (GET /v1/cluster, the dashboard). */
export function clusterJson(status: GroupStatus): Record<string, unknown> {
  return {
    group: status.group ?? null,
    elector: status.elector ?? null,
    node: status.node,
    role: status.role,
    term: status.term,
    primary: status.leader ?? null,
    members: status.members.map(memberJson),
    failovers: status.failovers.map((failover) => ({
      at: failover.at.toISOString(),
      term: failover.term,
      primary: failover.leader ?? null,
      cause: failover.cause,
    })),
  };
}

function memberJson(member: Member): Record<string, unknown> {
  return {
    node: member.node,
    address: member.address ?? null,
    role: member.role,
    term: member.term,
    last_seen: member.lastSeen.toISOString(),
  };
}

export function componentJson(component: ComponentStatus): Record<string, unknown> {
  return {
    name: component.name,
    run_on: component.runOn,
    state: component.state,
    restarts: component.restarts,
    last_error: component.lastError ?? null,
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
