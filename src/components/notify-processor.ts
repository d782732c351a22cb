// The built-in LISTEN/NOTIFY processor (Hermes' listener + processor in one component). A NOTIFY is a
// hint, not data: PostgreSQL drops notifications sent while nobody listens, so every (re)connection is
// followed by a catch-up call that re-reads the source of truth, and a burst of notifications is
// coalesced into one call. A store without LISTEN (embedded PGlite) is polled instead.
import { InvalidComponentError } from '../errors.js';
import type { Notification } from '../store/store.js';
import { sleep } from '../util/sleep.js';
import type { Component, ComponentContext, RunOn } from './component.js';
import { defineComponent } from './component.js';

export const DEFAULT_POLL_INTERVAL_MS = 1000;

/**
 * Handles notifications. `notifications` is empty for a catch-up call (at start, after a reconnect, or a
 * poll): look for all pending work then. Calls never overlap; a throw fails the component, which the
 * supervisor restarts with back-off (and the restart begins with a catch-up).
 */
export type NotifyProcessFn = (
  ctx: ComponentContext,
  notifications: readonly Notification[],
) => Promise<void>;

export interface NotifyProcessorOptions {
  readonly name: string;
  /** Channels to LISTEN on. */
  readonly channels: readonly string[];
  /** Default 'primary'. */
  readonly runOn?: RunOn;
  readonly process: NotifyProcessFn;
  /** Milliseconds between catch-up calls on a store without LISTEN. Default 1000. */
  readonly pollIntervalMs?: number;
}

/** A running notify processor, one per component run. */
interface Listening {
  stop(): Promise<void>;
}

export function createNotifyProcessor(options: NotifyProcessorOptions): Component {
  const { name } = options;
  const problem = notifyProcessorProblem(options);
  if (problem !== undefined) throw new InvalidComponentError(name, problem);
  const settings = {
    channels: [...options.channels],
    process: options.process,
    pollIntervalMs: options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS,
  };
  const runs = new Set<Listening>();
  return defineComponent({
    name,
    runOn: options.runOn ?? 'primary',
    async start(ctx: ComponentContext): Promise<void> {
      runs.add(await listen(ctx, settings));
    },
    async stop(): Promise<void> {
      const stopping = [...runs];
      runs.clear();
      await Promise.all(stopping.map((run) => run.stop()));
    },
  });
}

async function listen(
  ctx: ComponentContext,
  settings: { channels: readonly string[]; process: NotifyProcessFn; pollIntervalMs: number },
): Promise<Listening> {
  const stopping = new AbortController();
  const signal = AbortSignal.any([ctx.signal, stopping.signal]);
  const { store } = ctx;
  let pending: Notification[] = [];
  // With LISTEN, the catch-up waits for the connection (onConnect): a scan made before LISTEN is in
  // place could miss a NOTIFY sent between the two.
  let catchUpDue = store.listen === undefined;
  let wake: (() => void) | undefined;
  const poke = (): void => wake?.();

  const unlisten: Array<() => Promise<void>> = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(unlisten.splice(0).map((stop) => stop().catch(() => undefined)));
  };
  if (store.listen) {
    try {
      for (const channel of settings.channels) {
        const stop = await store.listen(
          channel,
          (notification) => {
            pending.push(notification);
            poke();
          },
          () => {
            catchUpDue = true;
            poke();
          },
        );
        unlisten.push(stop);
      }
    } catch (error) {
      await closeAll();
      throw error;
    }
  } else {
    ctx.log.info(
      { pollIntervalMs: settings.pollIntervalMs },
      `notify processor ${ctx.name}: the store has no LISTEN (embedded PGlite); polling every ${settings.pollIntervalMs} ms`,
    );
  }

  const idle = (): Promise<void> =>
    new Promise((resolve) => {
      const done = (): void => {
        signal.removeEventListener('abort', done);
        wake = undefined;
        resolve();
      };
      wake = done;
      signal.addEventListener('abort', done, { once: true });
    });

  // One loop per run, so process() calls never overlap: what arrives during a call waits for the next.
  const loop = (async (): Promise<void> => {
    try {
      while (!signal.aborted) {
        if (catchUpDue) {
          catchUpDue = false;
          await settings.process(ctx, []);
        } else if (pending.length > 0) {
          const batch = pending;
          pending = [];
          await settings.process(ctx, batch);
        } else if (store.listen === undefined) {
          await sleep(settings.pollIntervalMs, signal);
          catchUpDue = true;
        } else {
          await idle();
        }
      }
    } catch (error) {
      // A throw after the run was told to end is part of ending, not a failure.
      if (!signal.aborted) ctx.fail(error);
    } finally {
      await closeAll();
    }
  })();

  return {
    async stop(): Promise<void> {
      stopping.abort();
      await loop;
    },
  };
}

/** What makes a notify-processor definition unusable, in a sentence; undefined when it is fine. */
export function notifyProcessorProblem(definition: {
  readonly channels?: unknown;
  readonly process?: unknown;
  readonly runOn?: unknown;
  readonly pollIntervalMs?: unknown;
}): string | undefined {
  const { channels, runOn, pollIntervalMs } = definition;
  if (!Array.isArray(channels) || channels.length === 0) {
    return 'channels must be a non-empty list of channel names';
  }
  const list: readonly unknown[] = channels;
  const bad = list.findIndex((channel) => typeof channel !== 'string' || channel.length === 0);
  if (bad !== -1) return `channel names must be non-empty strings, got ${String(JSON.stringify(list[bad]))}`;
  if (typeof definition.process !== 'function') return 'process must be a function';
  if (runOn !== undefined && runOn !== 'primary' && runOn !== 'any') {
    return `runOn must be 'primary' or 'any', got ${JSON.stringify(runOn)}`;
  }
  if (
    pollIntervalMs !== undefined &&
    (typeof pollIntervalMs !== 'number' || !Number.isFinite(pollIntervalMs) || pollIntervalMs <= 0)
  ) {
    return `pollIntervalMs must be a positive number, got ${JSON.stringify(pollIntervalMs)}`;
  }
  return undefined;
}
