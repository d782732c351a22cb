// Retention: a primary-only component that deletes what is past `[events] retention_days` (events, and the
// task runs that ended), once at start and then hourly. It deletes in batches, each in its own transaction
// that checks the fence first, so a deposed primary that has not noticed yet deletes nothing, and a first
// round over a large log is many short transactions.
import type { Component, ComponentContext } from '../components/component.js';
import { describeError, FencedError } from '../errors.js';
import type { Tx } from '../store/store.js';
import { sleep } from '../util/sleep.js';

/** How often the primary deletes what is past its retention. */
export const RETENTION_INTERVAL_MS = 3_600_000;
/** Rows deleted per transaction. */
export const RETENTION_BATCH = 10_000;

/** One kind of row with a retention: what it is called in logs, and its delete. */
export interface RetentionTarget {
  /** Plural, as in "deleted 12 events past their retention". */
  readonly what: string;
  /** Deletes in `tx` at most `limit` rows older than `olderThanMs`; returns how many. */
  readonly prune: (tx: Tx, olderThanMs: number, limit: number) => Promise<number>;
}

export interface RetentionOptions {
  /** Rows older than this are deleted (more than 0). */
  readonly retentionMs: number;
  readonly targets: readonly RetentionTarget[];
  /** Between two rounds; default RETENTION_INTERVAL_MS. */
  readonly intervalMs?: number;
  /** Rows deleted per transaction; default RETENTION_BATCH. */
  readonly batchSize?: number;
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
   * One round: each target's deletes, a batch per fenced transaction until a batch comes short. Returns
   * how many rows each deleted; a failure (FencedError for a deposed primary) is logged, and that target
   * is tried again next round.
   */
  async prune(ctx: ComponentContext): Promise<Map<string, number>> {
    const deleted = new Map<string, number>();
    const batchSize = this.#options.batchSize ?? RETENTION_BATCH;
    for (const target of this.#options.targets) {
      if (ctx.signal.aborted) break;
      let count = 0;
      try {
        for (let batch = batchSize; batch === batchSize && !ctx.signal.aborted;) {
          batch = await ctx.store.transaction(async (tx) => {
            await ctx.assertPrimary(tx);
            return target.prune(tx, this.#options.retentionMs, batchSize);
          });
          count += batch;
        }
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
