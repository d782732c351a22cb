// The standalone elector: a named group of one. The node is primary at once, with a term one above the
// group's fence, so that its term still grows across restarts and fencing works the same as in a group.
import type { Elector, ElectorListener, ElectorOptions } from '../types.js';

export class StandaloneElector implements Elector {
  readonly kind = 'standalone';
  readonly #node: string;
  readonly #currentTerm: () => Promise<number>;

  /** `currentTerm` reads the group's fence (0 when never raised). */
  constructor(options: Pick<ElectorOptions, 'node'> & { currentTerm: () => Promise<number> }) {
    this.#node = options.node;
    this.#currentTerm = options.currentTerm;
  }

  async start(listener: ElectorListener): Promise<void> {
    const term = (await this.#currentTerm()) + 1;
    listener(
      { role: 'primary', term, leader: this.#node },
      { cause: 'elected', message: 'standalone elector: primary of a group of one' },
    );
  }

  resign(): Promise<void> {
    // There is no other node to hand over to.
    return Promise.resolve();
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }
}
