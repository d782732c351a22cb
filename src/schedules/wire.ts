// Schedules on the wire (GET /v1/schedules, POST /v1/schedules/:name/fire, the CLI's --json), in both
// directions: snake_case, ISO times, null for what is not known; the schemas read them back on the client.
import { z } from 'zod';

import type { AppliedTick } from './scheduler.js';
import type { ScheduleStatus } from './status.js';
import type { TickRow } from './ticks.js';

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());

function tickJson(tick: TickRow): Record<string, unknown> {
  return {
    tick: iso(tick.tick),
    term: tick.term,
    node: tick.node,
    applied_at: iso(tick.appliedAt),
    lateness_ms: tick.latenessMs,
    cause: tick.cause,
  };
}

export function scheduleJson(status: ScheduleStatus): Record<string, unknown> {
  return {
    name: status.name,
    configured: status.configured,
    spec: status.spec ?? null,
    action: status.action ?? null,
    missed_policy: status.missedPolicy ?? null,
    namespace: status.namespace ?? null,
    last_tick: status.last ? tickJson(status.last) : null,
    next_tick: iso(status.next),
    lag_ms: status.lagMs,
    missed: status.missed,
  };
}

export function appliedTickJson(tick: AppliedTick): Record<string, unknown> {
  return { schedule: tick.schedule, tick: iso(tick.tick), term: tick.term, applied: tick.applied };
}

const optional = <T extends z.ZodType>(schema: T) =>
  schema.nullable().transform((value) => value ?? undefined);
const time = z.iso.datetime().transform((value) => Date.parse(value));

const tickSchema = z
  .object({
    tick: time,
    term: z.number(),
    node: z.string(),
    applied_at: time,
    lateness_ms: z.number(),
    cause: z.enum(['on-time', 'catch-up', 'manual']),
  })
  .transform((row): TickRow => ({
    schedule: '',
    tick: row.tick,
    term: row.term,
    node: row.node,
    appliedAt: row.applied_at,
    latenessMs: row.lateness_ms,
    cause: row.cause,
  }));

const scheduleSchema = z
  .object({
    name: z.string(),
    configured: z.boolean(),
    spec: optional(z.string()),
    action: optional(z.string()),
    missed_policy: optional(z.enum(['skip', 'last', 'all'])),
    namespace: optional(z.string()),
    last_tick: optional(tickSchema),
    next_tick: optional(time),
    lag_ms: z.number(),
    missed: z.number(),
  })
  .transform((row): ScheduleStatus => ({
    name: row.name,
    configured: row.configured,
    spec: row.spec,
    action: row.action,
    missedPolicy: row.missed_policy,
    namespace: row.namespace,
    last: row.last_tick ? { ...row.last_tick, schedule: row.name } : undefined,
    next: row.next_tick,
    lagMs: row.lag_ms,
    missed: row.missed,
  }));

export const schedulesReply = z.object({ schedules: z.array(scheduleSchema) });
export const firedReply = z
  .object({ schedule: z.string(), tick: time, term: z.number(), applied: z.boolean() })
  .transform((row): AppliedTick => row);
