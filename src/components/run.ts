// One run of a component: from a start() to the end of its stop(). A run owns the AbortController
// behind `ctx.signal` and builds the context the component receives, so everything a run may do
// (check the fence, report a failure) is tied to that run and refused once it is over.
import type { Role } from '../cluster/types.js';
import type { WorkAbortedError } from '../errors.js';
import { FencedError, NotPrimaryError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store, Tx } from '../store/store.js';
import type { Component, ComponentContext } from './component.js';

export interface Run {
  readonly controller: AbortController;
  /** Resolves when the signal aborts, so a pending start() cannot hold up a step-down. */
  readonly aborted: Promise<void>;
  readonly term: number;
  readonly startedAt: number;
  abortedAt: number | undefined;
  failure: Error | undefined;
  /** Resolves when the run is over: stop() returned, or was abandoned at its deadline. */
  readonly ended: Promise<void>;
  readonly end: () => void;
}

export function createRun(term: number): Run {
  const controller = new AbortController();
  let end = (): void => undefined;
  const ended = new Promise<void>((resolve) => (end = resolve));
  const aborted = new Promise<void>((resolve) =>
    controller.signal.addEventListener('abort', () => resolve(), { once: true }),
  );
  return {
    controller,
    aborted,
    term,
    startedAt: Date.now(),
    abortedAt: undefined,
    failure: undefined,
    ended,
    end,
  };
}

/**
 * Aborts the run's signal once with `reason` (what work bound to it is told: a step-down, a stopping node),
 * noting when: the stop deadline counts from then.
 */
export function abortRun(run: Run, reason: WorkAbortedError): void {
  if (run.controller.signal.aborted) return;
  run.abortedAt = Date.now();
  run.controller.abort(reason);
}

export interface RunContextOptions {
  readonly component: Component;
  readonly log: Logger;
  readonly store: Store;
  readonly fail: (error: unknown) => void;
  readonly assertPrimary: (tx: Tx, term: number) => Promise<void>;
  /** The node's role and term now (an 'any' component acts for the current term). */
  readonly current: () => { readonly role: Role; readonly term: number };
}

export function runContext(run: Run, options: RunContextOptions): ComponentContext {
  const { name, runOn } = options.component;
  return {
    name,
    signal: run.controller.signal,
    term: run.term,
    log: options.log,
    store: options.store,
    fail: options.fail,
    assertPrimary: async (tx: Tx): Promise<void> => {
      const { role, term } = options.current();
      if (runOn === 'primary') {
        // The run's own signal is the local word that its term is over; the fence is the shared one.
        if (run.controller.signal.aborted) {
          throw new FencedError(run.term, term !== run.term ? term : undefined);
        }
        return options.assertPrimary(tx, run.term);
      }
      if (role === 'secondary') throw new NotPrimaryError(role, undefined);
      return options.assertPrimary(tx, term);
    },
  };
}

export type Outcome = { kind: 'resolved' } | { kind: 'rejected'; error: unknown } | { kind: 'timeout' };

/** Settles with `promise`, or with 'timeout' after `ms` (the timer is cleared either way). */
export async function settleWithin(promise: Promise<void>, ms: number): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Outcome>((resolve) => {
    timer = setTimeout(() => resolve({ kind: 'timeout' }), Math.max(0, ms));
  });
  try {
    return await Promise.race([
      promise.then(
        (): Outcome => ({ kind: 'resolved' }),
        (error: unknown): Outcome => ({ kind: 'rejected', error }),
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
