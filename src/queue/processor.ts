// Runs a queue's handler over a batch of records inside the caller's transaction. A failing batch is
// bisected under savepoints until the bad records are isolated, so one bad record costs log2(batch) extra
// rounds and never fails its neighbours. Each handler call has a deadline and an AbortSignal.
import type { QueueConfig } from '../config/types.js';
import { BatchFailedError, describeError, HandlerTimeoutError } from '../errors.js';
import type { Handler } from '../handler/handler.js';
import type { Logger } from '../log.js';
import { isConnectionError } from '../util/connection-errors.js';
import type { Tx } from '../store/store.js';
import { withDatabaseReason } from '../store/store.js';
import { backoffDelay } from '../util/backoff.js';

export interface RecordOutcome {
  /** Indexes (into the records given) that the handler processed; their effects are in the transaction. */
  readonly succeeded: number[];
  /** Indexes whose handler run threw, with the reason; their effects were rolled back. */
  readonly failed: Array<{ readonly index: number; readonly error: string }>;
}

/** Per-queue counts on this node since it started. */
export interface QueueCounters {
  processed: number;
  failed: number;
}

/** A node's counters of each queue, by queue name. */
export type CountersByQueue = ReadonlyMap<string, Readonly<QueueCounters>>;

/** What a handler is told about the group: the term, and the fence check. */
export interface Fencing {
  term(): number;
  assertPrimary(tx: Tx): Promise<void>;
}

/** A node not in a group: term 0, nothing to fence against. */
const ALONE: Fencing = { term: () => 0, assertPrimary: () => Promise.resolve() };

export class RecordProcessor {
  readonly queue: QueueConfig;
  readonly counters: QueueCounters = { processed: 0, failed: 0 };
  readonly #handler: Handler;
  readonly #log: Logger;
  readonly #abortSignal: () => AbortSignal;
  readonly #fencing: Fencing;

  constructor(options: {
    queue: QueueConfig;
    handler: Handler;
    log: Logger;
    /** Aborts running handlers: the node's hard stop, and for primary-only queues a step-down too. */
    abort: AbortSignal | (() => AbortSignal);
    fencing?: Fencing;
  }) {
    this.queue = options.queue;
    this.#handler = options.handler;
    this.#log = options.log;
    this.#abortSignal =
      typeof options.abort === 'function' ? options.abort : () => options.abort as AbortSignal;
    this.#fencing = options.fencing ?? ALONE;
  }

  /**
   * The fast path: runs the handler over all `records` directly in `tx`, with no savepoint. When a record
   * fails it throws BatchFailedError; the caller rolls the transaction back and calls run() in a new one.
   */
  async runWhole(tx: Tx, records: readonly Buffer[]): Promise<void> {
    try {
      await this.#call(tx, records);
    } catch (error) {
      if (this.#abortSignal().aborted || isConnectionError(error)) throw error;
      throw new BatchFailedError(describeError(error), { cause: error });
    }
  }

  /** Runs the handler over `records` in `tx`, isolating failures; never throws for a handler error. */
  async run(
    tx: Tx,
    records: readonly Buffer[],
    describe: (index: number) => object = () => ({}),
  ): Promise<RecordOutcome> {
    const outcome: RecordOutcome = { succeeded: [], failed: [] };
    await this.#isolate(tx, records, 0, records.length, outcome, describe);
    outcome.succeeded.sort((a, b) => a - b);
    return outcome;
  }

  /**
   * When a record that failed after `previousAttempts` earlier failures should run again, or undefined when
   * it has no attempts left and belongs in the error queue.
   */
  retryAt(previousAttempts: number, now = Date.now()): Date | undefined {
    const attempts = previousAttempts + 1;
    if (attempts >= this.queue.maxAttempts) return undefined;
    const delay = backoffDelay(attempts, {
      initialMs: this.queue.retryDelayMs,
      maxMs: this.queue.retryMaxDelayMs,
    });
    return new Date(now + delay);
  }

  async #isolate(
    tx: Tx,
    records: readonly Buffer[],
    start: number,
    end: number,
    outcome: RecordOutcome,
    describe: (index: number) => object,
  ): Promise<void> {
    const slice = records.slice(start, end);
    try {
      // A savepoint, so that a failure undoes this slice only.
      await tx.transaction((savepoint) => this.#call(savepoint, slice));
      for (let index = start; index < end; index++) outcome.succeeded.push(index);
      return;
    } catch (error) {
      // Stopping, or the store went away: not the records' fault, and the transaction is lost anyway.
      if (this.#abortSignal().aborted || isConnectionError(error)) throw error;
      if (end - start === 1) {
        // A statement the database refused: its reason, not drizzle's "Failed query", goes to the error queue.
        const reason = describeError(withDatabaseReason(error));
        outcome.failed.push({ index: start, error: reason });
        this.#log.warn(
          { queue: this.queue.name, position: start, ...describe(start), err: reason },
          `handler of queue "${this.queue.name}" failed on the record at position ${start} of its batch`,
        );
        return;
      }
    }
    const middle = start + Math.ceil((end - start) / 2);
    await this.#isolate(tx, records, start, middle, outcome, describe);
    await this.#isolate(tx, records, middle, end, outcome, describe);
  }

  async #call(tx: Tx, records: readonly Buffer[]): Promise<void> {
    const controller = new AbortController();
    const timeoutMs = this.queue.timeoutMs;
    const timer = setTimeout(() => {
      controller.abort(
        new HandlerTimeoutError(`the handler did not finish within timeout_ms (${timeoutMs} ms)`),
      );
    }, timeoutMs);
    const abort = this.#abortSignal();
    const forward = (): void => controller.abort(abort.reason);
    abort.addEventListener('abort', forward, { once: true });
    try {
      const aborted = new Promise<never>((_, reject) => {
        controller.signal.addEventListener('abort', () => reject(toError(controller.signal.reason)), {
          once: true,
        });
      });
      const running = this.#handler.run(tx, records, {
        queue: this.queue.name,
        signal: controller.signal,
        log: this.#log,
        term: this.#fencing.term(),
        assertPrimary: (checked) => this.#fencing.assertPrimary(checked),
      });
      // A handler that ignores its signal may still reject after its deadline: that must not go unhandled.
      running.catch(() => undefined);
      await Promise.race([running, aborted]);
    } finally {
      clearTimeout(timer);
      abort.removeEventListener('abort', forward);
    }
  }
}

function toError(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason));
}
