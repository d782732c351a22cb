// Periodic signs of life for the consumers of this process: one timer each, a first beat before the
// consumer counts as registered, and failed beats logged (the next one may succeed).
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';

export class Heartbeats {
  readonly #timers = new Map<string, NodeJS.Timeout | undefined>();

  constructor(
    private readonly intervalMs: number,
    private readonly what: string,
    private readonly log: Logger | undefined,
  ) {}

  /** Registers `id`; with `beat`, beats once now and then every interval. */
  async add(id: string, beat?: () => Promise<unknown>): Promise<void> {
    if (this.#timers.has(id)) return;
    if (!beat) {
      this.#timers.set(id, undefined);
      return;
    }
    await beat();
    const timer = setInterval(() => {
      beat().catch((error: unknown) => {
        this.log?.warn(
          { err: describeError(error), consumer: id },
          `${this.what}: consumer heartbeat failed`,
        );
      });
    }, this.intervalMs);
    timer.unref();
    this.#timers.set(id, timer);
  }

  /** Stops beating for `id`; false when it was not registered. */
  remove(id: string): boolean {
    if (!this.#timers.has(id)) return false;
    clearInterval(this.#timers.get(id));
    this.#timers.delete(id);
    return true;
  }

  has(id: string): boolean {
    return this.#timers.has(id);
  }

  ids(): string[] {
    return [...this.#timers.keys()];
  }
}
