// What a node runs depending on its role: queues with run_on = "primary" and components with runOn
// 'primary' run while the node is primary (or alone, not in a group); the rest run everywhere. Role changes
// are applied one at a time, in order. On a step-down, primary-only handlers are aborted at once (their
// batches roll back and are given back) and components get their hard stop deadline.
import type { RoleChange } from '../cluster/types.js';
import type { Supervisor } from '../components/supervisor.js';
import { SteppedDownError } from '../errors.js';
import type { QueueRunner } from '../queue/runner.js';

export class RoleWork {
  readonly #runners: readonly QueueRunner[];
  readonly #supervisor: Supervisor;
  #acting = new AbortController();
  #applying: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(runners: readonly QueueRunner[], supervisor: Supervisor) {
    this.#runners = runners;
    this.#supervisor = supervisor;
  }

  /** Aborts when the node stops being primary: the signal of primary-only handlers. */
  get actingSignal(): AbortSignal {
    return this.#acting.signal;
  }

  /** Starts or stops role-gated work for `change`, after the changes before it. */
  follow(change: RoleChange): Promise<void> {
    this.#applying = this.#applying.then(async () => {
      if (this.#closed) return;
      const acting = change.new === 'primary' || change.new === 'not-in-group';
      if (acting && this.#acting.signal.aborted) this.#acting = new AbortController();
      if (!acting) this.#acting.abort(new SteppedDownError(`the node is ${change.new}: no longer primary`));
      // Components first: their signals abort at once on a step-down.
      await this.#supervisor.setRole(change.new, change.term);
      const stopping: Array<Promise<void>> = [];
      for (const runner of this.#runners) {
        if (runner.runOn === 'any' || acting) runner.start();
        else stopping.push(runner.stop());
      }
      await Promise.all(stopping);
    });
    return this.#applying;
  }

  /** Stops following roles and stops the primary-only work (before leadership is released). */
  async stopPrimaryWork(): Promise<void> {
    this.#closed = true;
    await this.#applying;
    await Promise.all([
      this.#supervisor.stop(),
      ...this.#runners.filter((runner) => runner.runOn === 'primary').map((runner) => runner.stop()),
    ]);
  }
}
