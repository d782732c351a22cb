// What `baton schedules` and GET /v1/schedules show: each schedule of the config with its last applied
// tick, its next one, how late it is and how many ticks were missed, and the schedules the store still has
// a history of but the config no longer names (they no longer fire; their ticks stay readable).
import type { ScheduleConfig } from '../config/types.js';
import type { Store } from '../store/store.js';
import type { TickRow } from './ticks.js';
import { scheduleStates } from './ticks.js';
import { timingOf } from './timing.js';

export interface ScheduleStatus {
  readonly name: string;
  /** False for a schedule the config no longer names: it no longer fires. */
  readonly configured: boolean;
  /** "every 30s" or "cron 0 3 * * * (Europe/Paris)"; undefined when no longer configured. */
  readonly spec: string | undefined;
  /** "publish to jobs", "event default/nightly", "task report"; undefined when no longer configured. */
  readonly action: string | undefined;
  readonly missedPolicy: ScheduleConfig['missed'] | undefined;
  readonly namespace: string | undefined;
  /** The latest applied tick. */
  readonly last: TickRow | undefined;
  /** The next tick time (ms), when configured and it fires again. */
  readonly next: number | undefined;
  /** How far past its time the oldest tick not applied yet is (0 when none is due). */
  readonly lagMs: number;
  /** Ticks missed (counted by catch-ups) over the schedule's history. */
  readonly missed: number;
}

export async function scheduleStatuses(
  store: Store,
  schedules: Readonly<Record<string, ScheduleConfig>>,
  now: number = Date.now(),
): Promise<ScheduleStatus[]> {
  const states = new Map((await scheduleStates(store)).map((state) => [state.schedule, state]));
  const names = [...new Set([...Object.keys(schedules), ...states.keys()])].sort();
  return names.map((name): ScheduleStatus => {
    const config = schedules[name];
    const state = states.get(name);
    if (!config) {
      return {
        name,
        configured: false,
        spec: undefined,
        action: undefined,
        missedPolicy: undefined,
        namespace: undefined,
        last: state?.last,
        next: undefined,
        lagMs: 0,
        missed: state?.missed ?? 0,
      };
    }
    const timing = timingOf(config.timing);
    const decided = Math.max(state?.coveredUntil ?? now, state?.last?.tick ?? 0);
    const due = timing.next(decided);
    return {
      name,
      configured: true,
      spec: timing.description,
      action: describeAction(config),
      missedPolicy: config.missed,
      namespace: config.namespace,
      last: state?.last,
      next: timing.next(Math.max(now, decided)),
      lagMs: due !== undefined && due < now ? now - due : 0,
      missed: state?.missed ?? 0,
    };
  });
}

/**
 * The schedules a token limited to `namespaces` may see: those whose namespace is one of them (a removed
 * schedule's namespace is unknown: it is left out); all when `namespaces` is undefined.
 */
export function visibleSchedules(
  statuses: readonly ScheduleStatus[],
  namespaces: readonly string[] | undefined,
): ScheduleStatus[] {
  if (namespaces === undefined) return [...statuses];
  return statuses.filter((status) => status.namespace !== undefined && namespaces.includes(status.namespace));
}

function describeAction({ action }: ScheduleConfig): string {
  switch (action.kind) {
    case 'publish':
      return `publish to ${action.queue}`;
    case 'event':
      return `event ${action.namespace}/${action.key}`;
    case 'task':
      return `task ${action.task}`;
  }
}
