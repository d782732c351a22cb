// Retention: a primary-only component that deletes what is past `[events] retention_days` (events, and the
// task runs that ended), once at start and then hourly. Each delete runs in its own transaction that
// checks the fence first, so a deposed primary that has not noticed yet deletes nothing.
import type { Component, ComponentContext } from '../components/component.js';
import { describeError, FencedError } from '../errors.js';
import type { Tx } from '../store/store.js';
import { sleep } from '../util/sleep.js';

/** How often the primary deletes what is past its retention. */
export const RETENTION_INTERVAL_MS = 3_600_000;

/** One kind of row with a retention: what it is called in logs, and its delete. */
export interface RetentionTarget {
  /** Plural, as in "deleted 12 events past their retention". */
  readonly what: string;
  /** Deletes in `tx` what is older than `olderThanMs`; returns how many. */
  readonly prune: (tx: Tx, olderThanMs: number) => Promise<number>;
}

export interface RetentionOptions {
  /** Rows older than this are deleted (more than 0). */
  readonly retentionMs: number;
  readonly targets: readonly RetentionTarget[];
  /** Between two rounds; default RETENTION_INTERVAL_MS. */
  readonly intervalMs?: number;
}

export class Retention implements Component {
  readonly name = 'baton.retention';
  readonly runOn = 'primary' as const;
  readonly #options: RetentionOptions;
  #work: Promise<void> | undefined;

  constructor(options: RetentionOptions) {
    this.#options = options;
  }

  start(ctx: ComponentContext): void {
    this.#work = this.#loop(ctx).catch((error: unknown) => {
      if (!ctx.signal.aborted) ctx.fail(error);
    });
  }

  async stop(): Promise<void> {
    await this.#work;
  }

  /**
   * One round: each target's delete in its own fenced transaction. Returns how many rows each deleted;
   * a failure (FencedError for a deposed primary) is logged, and that target is tried again next round.
   */
  async prune(ctx: ComponentContext): Promise<Map<string, number>> {
    const deleted = new Map<string, number>();
    for (const target of this.#options.targets) {
      if (ctx.signal.aborted) break;
      try {
        const count = await ctx.store.transaction(async (tx) => {
          await ctx.assertPrimary(tx);
          return target.prune(tx, this.#options.retentionMs);
        });
        deleted.set(target.what, count);
        if (count > 0)
          ctx.log.info({ deleted: count }, `deleted ${count} ${target.what} past their retention`);
      } catch (error) {
        const fenced = error instanceof FencedError;
        ctx.log.warn(
          { err: describeError(error), fenced },
          fenced
            ? `did not delete ${target.what} past their retention: this node's term is over`
            : `could not delete ${target.what} past their retention; will retry`,
        );
      }
    }
    return deleted;
  }

  async #loop(ctx: ComponentContext): Promise<void> {
    while (!ctx.signal.aborted) {
      await this.prune(ctx);
      await sleep(this.#options.intervalMs ?? RETENTION_INTERVAL_MS, ctx.signal);
    }
  }
}
