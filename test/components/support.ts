// Helpers for the component tests: a log that keeps its lines, a store that only the fence check
// would use, and a probe component that records what the supervisor did to it.
import { pino } from 'pino';

import type { Component, ComponentContext } from '../../src/components/component.js';
import type { Logger } from '../../src/log.js';
import type { Store } from '../../src/store/store.js';

export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

export function captureLog(): { log: Logger; lines: LogLine[]; errors: () => LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => lines.push(JSON.parse(line) as LogLine) });
  return { log, lines, errors: () => lines.filter((line) => line.level >= 50) };
}

/** The supervisor hands the store to components; these tests never query it. */
export const unusedStore: Store = {
  kind: 'pglite',
  exclusive: true,
  schema: 'baton',
  transaction: () => Promise.reject(new Error('unused')),
  execute: () => Promise.reject(new Error('unused')),
  query: () => Promise.reject(new Error('unused')),
  ping: () => Promise.resolve(true),
  close: () => Promise.resolve(),
};

export interface ProbeOptions {
  readonly name: string;
  readonly runOn: 'primary' | 'any';
  /** How long start() takes. */
  readonly startMs?: number;
  /** How long stop() takes. */
  readonly stopMs?: number;
  /** Starts that throw before one succeeds. */
  readonly failStarts?: number;
  /** stop() hangs until `release()`. */
  readonly hangStop?: boolean;
  /** Shared with other probes: records "start:name" and "stop:name" in call order. */
  readonly journal?: string[];
}

export interface Probe {
  readonly component: Component;
  readonly starts: number[];
  readonly stops: number[];
  readonly terms: number[];
  /** For each stop(): was the run's signal already aborted? */
  readonly abortedAtStop: boolean[];
  /** The most calls into the component that were ever pending at once. */
  readonly maxConcurrentCalls: () => number;
  readonly context: () => ComponentContext | undefined;
  release(): void;
}

export function probe(options: ProbeOptions): Probe {
  const starts: number[] = [];
  const stops: number[] = [];
  const terms: number[] = [];
  const abortedAtStop: boolean[] = [];
  let current: ComponentContext | undefined;
  let pendingCalls = 0;
  let maxCalls = 0;
  let failuresLeft = options.failStarts ?? 0;
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  const enter = (): void => {
    pendingCalls += 1;
    maxCalls = Math.max(maxCalls, pendingCalls);
  };
  const component: Component = {
    name: options.name,
    runOn: options.runOn,
    async start(ctx) {
      enter();
      try {
        starts.push(Date.now());
        options.journal?.push(`start:${options.name}`);
        terms.push(ctx.term);
        current = ctx;
        if (options.startMs) await new Promise((resolve) => setTimeout(resolve, options.startMs));
        if (failuresLeft > 0) {
          failuresLeft -= 1;
          throw new Error(`${options.name} cannot start`);
        }
      } finally {
        pendingCalls -= 1;
      }
    },
    async stop() {
      enter();
      try {
        stops.push(Date.now());
        options.journal?.push(`stop:${options.name}`);
        abortedAtStop.push(current?.signal.aborted ?? false);
        if (options.stopMs) await new Promise((resolve) => setTimeout(resolve, options.stopMs));
        if (options.hangStop) await released;
      } finally {
        pendingCalls -= 1;
      }
    },
  };
  return {
    component,
    starts,
    stops,
    terms,
    abortedAtStop,
    maxConcurrentCalls: () => maxCalls,
    context: () => current,
    release: () => release(),
  };
}
