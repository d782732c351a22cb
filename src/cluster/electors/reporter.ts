// How an elector tells its state: it keeps the current state and tells the listener the first state, then
// each change (never the same state twice in a row). A listener that throws or rejects is logged, never
// allowed to stop the election; it is called, never awaited, so that a slow one cannot stall it either.
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ElectorListener, ElectorState, StateCause } from '../types.js';

export interface StateReporterOptions {
  readonly log: Logger;
  /** What starts its log lines, e.g. "redis elector". */
  readonly name: string;
  /** Whether each state applied is logged (info); off where the logger's context already names the elector. */
  readonly logStates: boolean;
}

export class StateReporter {
  readonly #log: Logger;
  readonly #name: string;
  readonly #logStates: boolean;
  #state: ElectorState = { role: 'secondary', term: 0, leader: undefined };
  #delivered = false;
  #listener: ElectorListener | undefined;

  constructor(options: StateReporterOptions) {
    this.#log = options.log;
    this.#name = options.name;
    this.#logStates = options.logStates;
  }

  /** The current state: secondary of term 0, without a leader, until the first report. */
  get state(): ElectorState {
    return this.#state;
  }

  /** Whether a state was applied yet (the first one is always told). */
  get delivered(): boolean {
    return this.#delivered;
  }

  /** Whether a listener is attached. */
  get attached(): boolean {
    return this.#listener !== undefined;
  }

  /** From now on, states are told to `listener`. */
  attach(listener: ElectorListener): void {
    this.#listener = listener;
  }

  /** From now on, states are still applied but told to no one. */
  detach(): void {
    this.#listener = undefined;
  }

  /** Applies a state and tells the listener, unless nothing changed (the first state is always told). */
  report(next: ElectorState, cause: string, message: string): void {
    const previous = this.#state;
    const same =
      previous.role === next.role && previous.term === next.term && previous.leader === next.leader;
    if (same && this.#delivered) return;
    this.#state = next;
    this.#delivered = true;
    if (this.#logStates) {
      const { role, term, leader } = next;
      this.#log.info({ role, term, leader, cause }, `${this.#name}: ${role} (${cause}: ${message})`);
    }
    this.#tell(next, { cause, message });
  }

  #tell(state: ElectorState, cause: StateCause): void {
    try {
      const result: unknown = this.#listener?.(state, cause);
      if (result instanceof Promise) {
        result.catch((error: unknown) =>
          this.#log.error({ err: describeError(error) }, `${this.#name}: the listener failed`),
        );
      }
    } catch (error) {
      this.#log.error({ err: describeError(error) }, `${this.#name}: the listener threw`);
    }
  }
}
