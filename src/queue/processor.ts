// Runs a queue's handler over a batch of records inside the caller's transaction. A failing batch is
// bisected under savepoints until the bad records are isolated, so one bad record costs log2(batch) extra
// rounds and never fails its neighbours. Each handler call has a deadline and an AbortSignal, and is told to
// the watchdog, which ends the process when a call blocks the event loop past its deadline. On a queue with a
// payload schema, records that do not parse fail for good before the handler is called, and it never sees them.
import type { QueueConfig } from '../config/types.js';
import { BatchFailedError, describeError, HandlerTimeoutError, InvalidPayloadError } from '../errors.js';
import type { Handler, HandlerContext } from '../handler/handler.js';
import type { Logger } from '../log.js';
import { isConnectionError } from '../util/connection-errors.js';
import type { Tx } from '../store/store.js';
import { withDatabaseReason } from '../store/store.js';
import { backoffDelay } from '../util/backoff.js';
import type { PerRecord } from '../util/per-record.js';
import { valueAt } from '../util/per-record.js';
import type { RecordFailure } from './backend.js';
import type { HandlerWatch } from './watchdog.js';
import { RECORD_IDS_LOGGED } from './watchdog.js';

export interface RecordOutcome {
  /** Indexes (into the records given) that the handler processed; their effects are in the transaction. */
  readonly succeeded: number[];
  /**
   * Indexes whose handler run threw, with the reason; their effects were rolled back. `permanent`: the
   * record cannot succeed however often it runs (its payload does not parse), so it is not retried.
   */
  readonly failed: Array<{ readonly index: number; readonly error: string; readonly permanent?: boolean }>;
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

/** The claim a run's records belong to, for the watchdog and the crash log. */
export interface ClaimRef {
  /** The batch (or inline request) id. */
  readonly batch: string;
  /** Record ids, one per record given, in the same order. */
  readonly ids: readonly string[];
  /** Record keys (ordered queues), one per record given; absent when no record has one. */
  readonly keys?: readonly (string | undefined)[] | undefined;
}

/** A batch's records as the handler is given them, once their payloads are parsed. */
interface Runnable {
  /** The records whose payload parsed (all of them on a queue without a payload schema). */
  readonly records: readonly Buffer[];
  /** Their parsed payloads, in the same order; undefined on a queue without a payload schema. */
  readonly payloads: readonly unknown[] | undefined;
  /** The index of each among the records given; undefined when they are all of them. */
  readonly indexes: readonly number[] | undefined;
  readonly claim: ClaimRef | undefined;
  /** The records whose payload did not parse, failed for good. */
  readonly refused: RecordOutcome['failed'];
}

export interface RunOptions {
  readonly claim?: ClaimRef;
  /** Past this many failures, runBounded() stops isolating and resolves to undefined. */
  readonly maxFailures: number;
}

/** Failures logged one line each per batch; more are summed up in one line. */
const FAILURES_LOGGED = 3;
/**
 * Characters of a failure's reason in its log line: a reason may quote the record (a parse error, say), and
 * a queue of junk would log each whole. The error queue keeps the whole reason.
 */
export const REASON_LOGGED = 200;

/** A node not in a group: term 0, nothing to fence against. */
const ALONE: Fencing = { term: () => 0, assertPrimary: () => Promise.resolve() };

export class RecordProcessor {
  readonly queue: QueueConfig;
  readonly counters: QueueCounters = { processed: 0, failed: 0 };
  readonly #handler: Handler;
  readonly #log: Logger;
  /** The log handlers get: the node's, bound to the queue. */
  readonly #handlerLog: Logger;
  readonly #abortSignal: () => AbortSignal;
  readonly #fencing: Fencing;
  readonly #watch: HandlerWatch | undefined;

  constructor(options: {
    queue: QueueConfig;
    handler: Handler;
    log: Logger;
    /** Aborts running handlers: the node's hard stop, and for primary-only queues a step-down too. */
    abort: AbortSignal | (() => AbortSignal);
    fencing?: Fencing;
    /** Told of each handler call (the watchdog). */
    watch?: HandlerWatch;
  }) {
    this.queue = options.queue;
    this.#handler = options.handler;
    this.#log = options.log;
    this.#handlerLog = options.log.child({ queue: options.queue.name });
    this.#abortSignal =
      typeof options.abort === 'function' ? options.abort : () => options.abort as AbortSignal;
    this.#fencing = options.fencing ?? ALONE;
    this.#watch = options.watch;
  }

  /**
   * The keys of `records` on a queue with ordering = "key": those given, and for records without one the
   * handler module's key() when it exports one (BadRequestError when it fails). Elsewhere, `given` as is.
   */
  recordKeys(
    records: readonly Buffer[],
    given: PerRecord<string> | undefined,
  ): PerRecord<string> | undefined {
    const keyOf = this.#handler.key;
    if (this.queue.ordering !== 'key' || keyOf === undefined) return given;
    if (typeof given === 'string') return given;
    const keys = records.map((record, index) => valueAt(given, index) ?? keyOf(record));
    return keys.some((key) => key !== undefined) ? keys : undefined;
  }

  /**
   * Checks `records` against the queue's payload schema before any is stored: InvalidPayloadError (a
   * BadRequestError) naming the first that does not parse. Nothing to check on a queue without one.
   */
  checkPayloads(records: readonly Buffer[]): void {
    const parse = this.#handler.payload;
    if (parse === undefined) return;
    for (const [index, record] of records.entries()) {
      const result = parse(record);
      if (!result.ok)
        throw new InvalidPayloadError(result.reason, { record: index + 1, count: records.length });
    }
  }

  /**
   * The fast path: runs the handler over all `records` directly in `tx`, with no savepoint. When a record
   * fails (or its payload does not parse) it throws BatchFailedError; the caller rolls the transaction back
   * and calls run() in a new one.
   */
  async runWhole(tx: Tx, records: readonly Buffer[], claim?: ClaimRef): Promise<void> {
    const runnable = this.#parse(records, claim);
    const refused = runnable.refused[0];
    if (refused !== undefined) throw new BatchFailedError(refused.error, { permanent: true });
    try {
      await this.#call(tx, runnable.records, runnable.payloads, claim, 0);
    } catch (error) {
      if (this.#abortSignal().aborted || isConnectionError(error)) throw error;
      throw new BatchFailedError(describeError(error), { cause: error });
    }
  }

  /** Runs the handler over `records` in `tx`, isolating failures; never throws for a handler error. */
  async run(tx: Tx, records: readonly Buffer[], options: { claim?: ClaimRef } = {}): Promise<RecordOutcome> {
    return (await this.runBounded(tx, records, { ...options, maxFailures: Infinity })) as RecordOutcome;
  }

  /**
   * As run(), but resolves to undefined once more than `options.maxFailures` records failed (what
   * succeeded so far is still in `tx`: the caller rolls back and hands the records to a path that
   * isolates them in bounded batches).
   */
  async runBounded(
    tx: Tx,
    records: readonly Buffer[],
    options: RunOptions,
  ): Promise<RecordOutcome | undefined> {
    const runnable = this.#parse(records, options.claim);
    const outcome: RecordOutcome = { succeeded: [], failed: [...runnable.refused] };
    if (outcome.failed.length > options.maxFailures) return undefined;
    const isolation = { runnable, outcome, maxFailures: options.maxFailures };
    if (!(await this.#isolate(tx, isolation, 0, runnable.records.length))) return undefined;
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

  /**
   * `records` with their payloads parsed by the queue's schema: those that parse, to run, and those that do
   * not, failed for good (a run cannot change bytes). All of them as they are on a queue without a schema.
   */
  #parse(records: readonly Buffer[], claim: ClaimRef | undefined): Runnable {
    const parse = this.#handler.payload;
    if (parse === undefined) return { records, payloads: undefined, indexes: undefined, claim, refused: [] };
    const payloads: unknown[] = [];
    const refused: Array<RecordOutcome['failed'][number]> = [];
    for (const [index, record] of records.entries()) {
      const result = parse(record);
      if (result.ok) payloads.push(result.value);
      else refused.push({ index, error: result.reason, permanent: true });
    }
    if (refused.length === 0) return { records, payloads, indexes: undefined, claim, refused };
    const failed = new Set(refused.map(({ index }) => index));
    const indexes = [...records.keys()].filter((index) => !failed.has(index));
    return {
      records: indexes.map((index) => records[index] as Buffer),
      payloads,
      indexes,
      claim: claim && {
        batch: claim.batch,
        ids: indexes.map((index) => claim.ids[index] as string),
        keys: claim.keys && indexes.map((index) => claim.keys?.[index]),
      },
      refused,
    };
  }

  /** Isolates the failures of runnable.records[start, end); false once past the failure budget. */
  async #isolate(
    tx: Tx,
    isolation: { runnable: Runnable; outcome: RecordOutcome; maxFailures: number },
    start: number,
    end: number,
  ): Promise<boolean> {
    const { runnable, outcome, maxFailures } = isolation;
    const { records, payloads, indexes, claim } = runnable;
    // Back to the index among the records given.
    const given = (index: number): number => indexes?.[index] ?? index;
    try {
      // A savepoint, so that a failure undoes this slice only.
      await tx.transaction((savepoint) =>
        this.#call(savepoint, records.slice(start, end), payloads?.slice(start, end), claim, start),
      );
      for (let index = start; index < end; index++) outcome.succeeded.push(given(index));
      return true;
    } catch (error) {
      // Stopping, or the store went away: not the records' fault, and the transaction is lost anyway.
      if (this.#abortSignal().aborted || isConnectionError(error)) throw error;
      if (end - start === 1) {
        // The failure is logged with its message once settled (logFailures); its stack, for whoever looks
        // closer, only here, where the error itself is still at hand.
        const record = claim?.ids[start];
        this.#log.debug(
          { queue: this.queue.name, batch: claim?.batch, record, err: error },
          `queue "${this.queue.name}": record ${record ?? `#${given(start)}`} failed`,
        );
        // A statement the database refused: its reason, not drizzle's "Failed query", goes to the error queue.
        outcome.failed.push({ index: given(start), error: describeError(withDatabaseReason(error)) });
        return outcome.failed.length <= maxFailures;
      }
    }
    const middle = start + Math.ceil((end - start) / 2);
    return (
      (await this.#isolate(tx, isolation, start, middle)) && (await this.#isolate(tx, isolation, middle, end))
    );
  }

  async #call(
    tx: Tx,
    records: readonly Buffer[],
    payloads: readonly unknown[] | undefined,
    claim: ClaimRef | undefined,
    offset: number,
  ): Promise<void> {
    const controller = new AbortController();
    const timeoutMs = this.queue.timeoutMs;
    const ids = claim?.ids.slice(offset, offset + Math.min(records.length, RECORD_IDS_LOGGED)) ?? [];
    const watched = this.#watch?.begin({
      queue: this.queue.name,
      timeoutMs,
      ...(claim ? { claim: claim.batch } : {}),
      records: ids,
      count: records.length,
    });
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
      const context = (
        bindings: object | undefined,
        parsed: Pick<HandlerContext, 'payload' | 'payloads' | 'key' | 'keys'> | undefined,
      ): HandlerContext => {
        let log: Logger | undefined;
        const handlerLog = this.#handlerLog;
        return {
          ...parsed,
          queue: this.queue.name,
          signal: controller.signal,
          // Made on first use: most calls never log, and a child logger per record is not free.
          get log(): Logger {
            return (log ??= bindings === undefined ? handlerLog : handlerLog.child(bindings));
          },
          term: this.#fencing.term(),
          assertPrimary: (checked) => this.#fencing.assertPrimary(checked),
        };
      };
      const position = (index: number): object | undefined =>
        claim === undefined ? undefined : { batch: claim.batch, record: claim.ids[offset + index] };
      // process() is given a context per record when it has one of its own: the record in its log, its payload.
      const keys = claim?.keys?.slice(offset, offset + records.length);
      const running = this.#handler.run(
        tx,
        records,
        context(records.length === 1 ? position(0) : claim && { batch: claim.batch }, {
          ...(payloads && { payloads }),
          ...(keys && { keys }),
        }),
        claim === undefined && payloads === undefined
          ? undefined
          : (index) =>
              context(position(index), {
                ...(payloads && { payload: payloads[index] }),
                ...(keys?.[index] !== undefined && { key: keys[index] }),
              }),
      );
      // A handler that ignores its signal may still reject after its deadline: that must not go unhandled.
      running.catch(() => undefined);
      await Promise.race([running, aborted]);
    } finally {
      clearTimeout(timer);
      abort.removeEventListener('abort', forward);
      if (watched !== undefined) this.#watch?.end(watched);
    }
  }
}

/**
 * Logs the failures of a batch (or inline request) after it was settled: one line per failure for the first
 * few, then one line for the rest, so that a batch of junk costs a few lines, not one per record. `moved`:
 * record id → error queue id, for those moved to the error queue.
 */
export function logFailures(
  log: Logger,
  queue: string,
  failures: readonly RecordFailure[],
  moved: ReadonlyMap<string, string>,
): void {
  for (const failure of failures.slice(0, FAILURES_LOGGED)) {
    const attempts = failure.record.attempts + 1;
    const errorId = moved.get(failure.record.id);
    if (errorId === undefined) {
      log.warn(
        { queue, record: failure.record.id, attempts, err: loggedReason(failure.error) },
        `queue "${queue}": record ${failure.record.id} failed (attempt ${attempts}); retried after a back-off`,
      );
    } else {
      // Named by its id in the error queue, as `baton errors` lists it.
      log.error(
        { queue, record: errorId, attempts, err: loggedReason(failure.error) },
        `queue "${queue}": record ${errorId} moved to the error queue errors-${queue}`,
      );
    }
  }
  const rest = failures.slice(FAILURES_LOGGED);
  if (rest.length === 0) return;
  const toErrors = rest.filter((failure) => moved.has(failure.record.id)).length;
  log.error(
    { queue, failed: rest.length, movedToErrors: toErrors, err: rest[0] && loggedReason(rest[0].error) },
    `queue "${queue}": ${rest.length} more records of the batch failed (${toErrors} moved to the error queue errors-${queue}, the others retried after a back-off)`,
  );
}

/** A reason cut to REASON_LOGGED characters, saying how many more there were. */
export function loggedReason(reason: string): string {
  if (reason.length <= REASON_LOGGED) return reason;
  return `${reason.slice(0, REASON_LOGGED)}… (${reason.length - REASON_LOGGED} more characters)`;
}

function toError(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason));
}
