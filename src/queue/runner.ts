// The queue runner: a component (runOn = the queue's run_on) whose run is `concurrency` loops that claim a
// batch, run the handler and acknowledge the batch in one sink transaction (claiming the next batch
// meanwhile). Failed records are retried after back-off, then go to the error queue. Draining stops the
// claiming, gives back batches claimed ahead and lets in-flight batches finish; the run's signal (a
// step-down, or the node's stop past its deadline) aborts the handlers, and their batches are given back.
// A record whose consumer died runs alone (it may be what killed the node), and a failing batch is
// isolated in transactions of at most ISOLATE_MAX records, so that junk costs bounded work per transaction.
import type { Component, ComponentContext, RunOn } from '../components/component.js';
import {
  BackendUnavailableError,
  BatchFailedError,
  ClaimLostError,
  describeError,
  WorkAbortedError,
} from '../errors.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import { backoffDelay } from '../util/backoff.js';
import { sleep } from '../util/sleep.js';
import type { ClaimedBatch, ClaimedRecord, QueueBackend, RecordFailure } from './backend.js';
import type { ClaimRef, RecordProcessor } from './processor.js';
import { logFailures } from './processor.js';

/**
 * How long an idle consumer waits for a wake-up before it looks again (retries become ready by time). A store
 * queue whose LISTEN connection is up waits longer, until its earliest back-off ends (store-queue.ts).
 */
const IDLE_POLL_MS = 500;
/** How often a backend is searched for claims of dead consumers (and a store queue kept up, see queue-upkeep.ts). */
const RECOVERY_INTERVAL_MS = 1_000;
const RECONNECT_BACKOFF = { initialMs: 1_000, maxMs: 32_000 };
/**
 * A failing batch larger than this is split in halves, each in a transaction of its own, before its
 * failures are isolated under savepoints: at most 2 × ISOLATE_MAX savepoints in one transaction.
 */
export const ISOLATE_MAX = 32;

/** A claim that the queue's rate limit allowed no record now. */
const RATE_LIMITED = Symbol('rate limited');
/** A consumer waiting for its queue's rate looks again at least this often (a stopping run ends the wait). */
const MAX_RATE_WAIT_MS = 1_000;

/** How a batch ended: every record committed, some failed (the others committed), or nothing committed. */
export type BatchOutcome = 'committed' | 'partial' | 'rolled_back';

/** What a runner's run needs of its component context. */
export type RunnerContext = Pick<ComponentContext, 'signal' | 'fail'>;

/** One run: its loops, which stop claiming when the run's signal aborts or `draining` does. */
interface RunnerRun {
  readonly draining: AbortController;
  readonly loops: ReadonlyArray<Promise<void>>;
}

export class QueueRunner implements Component {
  /** `baton.queue.<queue>` among the node's components. */
  readonly name: string;
  readonly runOn: RunOn;
  readonly #processor: RecordProcessor;
  readonly #backend: QueueBackend;
  readonly #store: Store;
  readonly #consumer: string;
  readonly #log: Logger;
  readonly #onBatch: ((seconds: number, outcome: BatchOutcome) => void) | undefined;
  #run: RunnerRun | undefined;
  /** How long to wait before the next claim, after the queue's rate allowed none. */
  #rateWaitMs = 0;
  #signal: AbortSignal = new AbortController().signal;

  constructor(options: {
    processor: RecordProcessor;
    backend: QueueBackend;
    store: Store;
    consumer: string;
    log: Logger;
    /** Told of each batch: seconds from its claim to its commit (or rollback), and how it ended. */
    onBatch?: (seconds: number, outcome: BatchOutcome) => void;
  }) {
    this.#processor = options.processor;
    this.#backend = options.backend;
    this.#store = options.store;
    this.#consumer = options.consumer;
    this.#log = options.log;
    this.#onBatch = options.onBatch;
    this.name = `baton.queue.${options.processor.queue.name}`;
    this.runOn = options.processor.queue.runOn;
  }

  get queue(): string {
    return this.#processor.queue.name;
  }

  /**
   * The signal of the current run (of the last one once it ended; a live one before the first): the
   * queue's handlers abort with it.
   */
  get signal(): AbortSignal {
    return this.#signal;
  }

  /** Starts consuming until `ctx.signal` aborts or the run is drained. */
  start(ctx: RunnerContext): void {
    this.#signal = ctx.signal;
    const draining = new AbortController();
    const claims = AbortSignal.any([ctx.signal, draining.signal]);
    // One batch at a time on an exclusive (single-connection) store: more loops would only queue up.
    const count = this.#store.exclusive ? 1 : this.#processor.queue.concurrency;
    const loops = [this.#recoverLoop(claims)];
    for (let index = 0; index < count; index++) loops.push(this.#loop(claims));
    this.#run = {
      draining,
      // The loops handle their own errors; one that escapes is a bug that restarts the run.
      loops: loops.map((loop) =>
        loop.catch((error: unknown) => {
          if (!ctx.signal.aborted) ctx.fail(error);
        }),
      ),
    };
  }

  /** Stops claiming (batches claimed ahead are given back) and resolves when the in-flight batches finished. */
  async drain(): Promise<void> {
    const run = this.#run;
    if (!run) return;
    run.draining.abort();
    await Promise.all(run.loops);
  }

  /** Ends the run: once its signal aborted, in-flight handlers are aborted and their batches given back. */
  async stop(): Promise<void> {
    await this.drain();
    this.#run = undefined;
  }

  /**
   * Recovers claims of dead consumers, at start and then every RECOVERY_INTERVAL_MS. Alone on its store (the
   * embedded one), a process has no other consumers to recover from after its start, but the rounds go on:
   * they run the queue's upkeep (the VACUUM and ANALYZE of queue-upkeep.ts), and cost one index read when
   * there is nothing to do.
   */
  async #recoverLoop(claims: AbortSignal): Promise<void> {
    const { maxAttempts } = this.#processor.queue;
    do {
      try {
        const recovered = await this.#backend.recoverClaims(this.queue, { maxAttempts });
        if (recovered > 0) {
          this.#log.warn(
            { queue: this.queue, records: recovered },
            `queue "${this.queue}": recovered ${recovered} claimed records of a consumer that stopped`,
          );
        }
      } catch (error) {
        this.#log.warn(
          { queue: this.queue, err: describeError(error) },
          `queue "${this.queue}": claim recovery failed`,
        );
      }
      await sleep(RECOVERY_INTERVAL_MS, claims);
    } while (!claims.aborted);
  }

  async #loop(claims: AbortSignal): Promise<void> {
    const { batchSize } = this.#processor.queue;
    // While a full batch runs (more records are likely waiting), the next one is claimed, so that its round
    // trip is not waited for. Not on an exclusive store: there the claim would wait for the transaction.
    const prefetch = !this.#store.exclusive;
    let failures = 0;
    let next: Promise<ClaimedBatch | undefined | typeof RATE_LIMITED> | undefined;
    while (!claims.aborted) {
      try {
        const claiming = next ?? this.#claim(batchSize);
        next = undefined;
        const batch = await claiming;
        failures = 0;
        if (batch === RATE_LIMITED) {
          await sleep(this.#rateWaitMs, claims);
          continue;
        }
        if (!batch) {
          await this.#backend.waitForRecords(this.queue, IDLE_POLL_MS, claims);
          continue;
        }
        if (prefetch && batch.records.length >= batchSize && this.#keysPlenty(batch) && !claims.aborted) {
          next = this.#claim(batchSize);
          next.catch(() => undefined);
        }
        await this.#process(await this.#orphansAlone(batch), claims);
      } catch (error) {
        failures += 1;
        const delay = backoffDelay(failures, RECONNECT_BACKOFF);
        this.#log.error(
          { queue: this.queue, err: describeError(error), retryInMs: delay },
          `queue "${this.queue}": consuming failed; retrying in ${delay} ms`,
        );
        await sleep(delay, claims);
      }
    }
    if (next) await this.#giveBack(next);
  }

  /**
   * Whether claiming ahead after `batch` holds no key that another consumer could run meanwhile. On an ordered
   * queue with one batch per key, a claim takes at most half a batch from a key while other keys have work: a
   * full batch from one or two keys says that keys are few, and a batch claimed ahead would hold keys idle
   * while this one runs (with 10 busy keys and 4 consumers, half of them would find none).
   */
  #keysPlenty(batch: ClaimedBatch): boolean {
    const { ordering, keyConcurrency } = this.#processor.queue;
    if (ordering !== 'key' || keyConcurrency !== 1) return true;
    const keys = new Set<string>();
    for (const record of batch.records) {
      if (record.key === undefined) return true;
      keys.add(record.key);
      if (keys.size > 2) return true;
    }
    return false;
  }

  /**
   * Claims up to `max` records; on a queue with a rate limit, only as many as the queue's rate allows now
   * (RATE_LIMITED when none: #rateWaitMs says until when), giving back what the claim did not use.
   */
  async #claim(max: number): Promise<ClaimedBatch | undefined | typeof RATE_LIMITED> {
    const perSecond = this.#processor.queue.rateLimit;
    if (perSecond === undefined) return this.#backend.claim(this.queue, this.#consumer, max);
    const { granted, waitMs } = await this.#backend.rates.reserve(this.queue, max, perSecond);
    if (granted === 0) {
      this.#rateWaitMs = Math.min(waitMs, MAX_RATE_WAIT_MS);
      return RATE_LIMITED;
    }
    let batch: ClaimedBatch | undefined;
    try {
      batch = await this.#backend.claim(this.queue, this.#consumer, granted);
    } finally {
      const unused = granted - (batch?.records.length ?? 0);
      if (unused > 0) await this.#backend.rates.refund(this.queue, unused, perSecond).catch(() => undefined);
    }
    return batch;
  }

  /** Stopping: gives back a batch claimed ahead, which never ran (no attempt is counted). */
  async #giveBack(claiming: Promise<ClaimedBatch | undefined | typeof RATE_LIMITED>): Promise<void> {
    try {
      const batch = await claiming;
      if (batch && batch !== RATE_LIMITED) await this.#backend.release(batch, batch.records);
    } catch (error) {
      // The claim or the release failed: if the batch exists, claim recovery gives it back.
      this.#log.warn(
        { queue: this.queue, err: describeError(error) },
        `queue "${this.queue}": could not give back a batch claimed ahead; claim recovery will`,
      );
    }
  }

  /**
   * A record of a dead consumer's claim may be what killed it: it runs alone, so that another crash counts
   * an attempt against it only. The records from the first such one on are given back (no attempt
   * counted); the batch keeps those before it, or that record alone when it comes first.
   */
  async #orphansAlone(batch: ClaimedBatch): Promise<ClaimedBatch> {
    const first = batch.records.findIndex((record) => record.orphaned === true);
    if (first < 0 || batch.records.length === 1) return batch;
    const keep = first === 0 ? 1 : first;
    await this.#backend.release(batch, batch.records.slice(keep));
    return { ...batch, records: batch.records.slice(0, keep) };
  }

  /** Processes a claimed batch, then settles it with the backend: exactly once per batch. */
  async #process(batch: ClaimedBatch, claims: AbortSignal): Promise<void> {
    const started = performance.now();
    const observe = (outcome: BatchOutcome): void =>
      this.#onBatch?.((performance.now() - started) / 1000, outcome);
    let failures: RecordFailure[];
    let heldBack: ClaimedRecord[] = [];
    try {
      const { ordering, keyConcurrency } = this.#processor.queue;
      if (ordering === 'key' && keyConcurrency === 1) {
        ({ failures, heldBack } = await this.#commitInOrder(batch, groupedByKey(batch.records)));
      } else if (ordering === 'key') {
        // Keys that run side by side (key_concurrency > 1) keep no order: a failure holds nothing back.
        failures = await this.#commit(batch, groupedByKey(batch.records));
      } else {
        failures = await this.#commit(batch, batch.records);
      }
    } catch (error) {
      observe('rolled_back');
      if (isAbort(error)) {
        // Stopping, or stepping down: the batch rolled back; give it back without counting an attempt.
        await this.#backend.release(batch, batch.records);
        return;
      }
      if (error instanceof ClaimLostError) {
        this.#log.warn(
          { queue: this.queue, err: error.message },
          'a batch lost its claim; it was rolled back',
        );
        await this.#backend.release(batch, batch.records);
        return;
      }
      if (error instanceof BackendUnavailableError) {
        // Not the records' fault: no attempt is counted. Give them back once the backend answers again.
        await this.#releaseWhenBack(batch, error, claims);
        return;
      }
      throw error;
    }
    observe(failures.length === 0 ? 'committed' : 'partial');
    const processor = this.#processor;
    processor.counters.processed += batch.records.length - failures.length - heldBack.length;
    processor.counters.failed += failures.length;
    // Given back before the failures are settled: a key's failed record then goes back in front of them.
    if (heldBack.length > 0) await this.#backend.release(batch, heldBack);
    const moved = await this.#backend.complete(batch, failures);
    logFailures(this.#log, this.queue, failures, moved);
  }

  /**
   * Runs `records` in one transaction and returns the failed ones. A batch that fails is isolated under
   * savepoints when it holds at most ISOLATE_MAX records, else split in halves, each in a transaction of its
   * own. If the transaction itself fails (not a handler error, which the processor isolates, but e.g. a
   * commit that violates a deferred constraint), the records are split the same way until the failing
   * record is found.
   */
  async #commit(batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<RecordFailure[]> {
    try {
      try {
        return await this.#transact(batch, records, 'whole');
      } catch (error) {
        if (!(error instanceof BatchFailedError)) throw error;
        if (records.length <= ISOLATE_MAX) return await this.#transact(batch, records, 'isolate');
      }
    } catch (error) {
      if (isInterruption(error)) throw error;
      if (records.length === 1) return [this.#failureOf(records[0] as ClaimedRecord, error)];
    }
    const middle = Math.ceil(records.length / 2);
    return [
      ...(await this.#commit(batch, records.slice(0, middle))),
      ...(await this.#commit(batch, records.slice(middle))),
    ];
  }

  /**
   * An ordered queue's batch (records grouped by key, each key's in order): as #commit, but halves are only
   * ever split in transactions of their own, run in order, and once a record of a key failed, the records of
   * that key after it do not run: they are held back, to be given back to the queue behind the failed record
   * (which waits out its back-off, or goes to the error queue) without an attempt counted.
   */
  async #commitInOrder(
    batch: ClaimedBatch,
    records: readonly ClaimedRecord[],
  ): Promise<{ failures: RecordFailure[]; heldBack: ClaimedRecord[] }> {
    const failures: RecordFailure[] = [];
    const heldBack: ClaimedRecord[] = [];
    const failedKeys = new Set<string>();
    const run = async (slice: readonly ClaimedRecord[]): Promise<void> => {
      const live: ClaimedRecord[] = [];
      for (const record of slice) {
        if (record.key !== undefined && failedKeys.has(record.key)) heldBack.push(record);
        else live.push(record);
      }
      if (live.length === 0) return;
      try {
        await this.#transact(batch, live, 'whole');
        return;
      } catch (error) {
        if (isInterruption(error)) throw error;
        if (live.length === 1) {
          const record = live[0] as ClaimedRecord;
          failures.push(this.#failureOf(record, error));
          if (record.key !== undefined) failedKeys.add(record.key);
          return;
        }
      }
      const middle = Math.ceil(live.length / 2);
      await run(live.slice(0, middle));
      await run(live.slice(middle));
    };
    await run(records);
    return { failures, heldBack };
  }

  /**
   * One transaction over `records`: the whole batch at once (throws BatchFailedError if a record fails), or
   * with failures isolated under savepoints. Acknowledges what succeeded; returns what failed.
   */
  async #transact(
    batch: ClaimedBatch,
    records: readonly ClaimedRecord[],
    mode: 'whole' | 'isolate',
  ): Promise<RecordFailure[]> {
    const processor = this.#processor;
    const payloads = records.map((record) => record.payload);
    const keys = records.some((record) => record.key !== undefined)
      ? records.map((record) => record.key)
      : undefined;
    const claim: ClaimRef = { batch: batch.id, ids: records.map((record) => record.id), keys };
    return this.#store.transaction(async (tx) => {
      if (mode === 'whole') {
        // The acknowledgement goes out first (the yield lets its statement reach the connection), so that its
        // round trip overlaps the handler's own work. Both are in this transaction: which runs first does not
        // matter. A lost claim is what the transaction fails with, whatever the handler did.
        const acknowledged = this.#backend.acknowledge(tx, batch, records);
        acknowledged.catch(() => undefined);
        await new Promise(setImmediate);
        try {
          await processor.runWhole(tx, payloads, claim);
        } catch (error) {
          const lost = await acknowledged.then(
            () => undefined,
            (failure: unknown) => (failure instanceof ClaimLostError ? failure : undefined),
          );
          throw lost ?? error;
        }
        await acknowledged;
        return [];
      }
      const outcome = await processor.run(tx, payloads, { claim });
      await this.#backend.acknowledge(
        tx,
        batch,
        outcome.succeeded.map((index) => records[index] as ClaimedRecord),
      );
      return outcome.failed.map(({ index, error, permanent }) =>
        this.#failure(records[index] as ClaimedRecord, error, permanent === true),
      );
    });
  }

  /** The failure of a record whose run (alone) threw `error`: see #failure. */
  #failureOf(record: ClaimedRecord, error: unknown): RecordFailure {
    const permanent = error instanceof BatchFailedError && error.permanent;
    return this.#failure(record, describeError(error), permanent);
  }

  /**
   * A record's failure: retried after its back-off, or straight to the error queue when it has no attempts
   * left or failed for good (its payload does not parse: running it again cannot help).
   */
  #failure(record: ClaimedRecord, error: string, permanent: boolean): RecordFailure {
    return { record, error, retryAt: permanent ? undefined : this.#processor.retryAt(record.attempts) };
  }

  async #releaseWhenBack(batch: ClaimedBatch, cause: Error, claims: AbortSignal): Promise<void> {
    this.#log.error(
      { queue: this.queue, err: describeError(cause) },
      `queue "${this.queue}": a backend is unreachable; the batch is given back when it answers again`,
    );
    for (let attempt = 1; ; attempt++) {
      await sleep(backoffDelay(attempt, RECONNECT_BACKOFF), claims);
      try {
        await this.#backend.release(batch, batch.records);
        this.#log.info({ queue: this.queue }, `queue "${this.queue}": the backend answers again; resuming`);
        return;
      } catch (error) {
        // Stopping while the store is down: the claims stay, and are recovered once this consumer is gone.
        if (claims.aborted) return;
        this.#log.warn(
          { queue: this.queue, err: describeError(error) },
          `queue "${this.queue}": still unreachable`,
        );
      }
    }
  }
}

/** Not the records' fault: stopping, a claim lost to recovery, or a backend gone. Their batch is given back. */
function isInterruption(error: unknown): boolean {
  return isAbort(error) || error instanceof ClaimLostError || error instanceof BackendUnavailableError;
}

function isAbort(error: unknown): boolean {
  return error instanceof WorkAbortedError || (error instanceof Error && error.name === 'AbortError');
}

/**
 * The records of a batch grouped by key, the keys in the order of their first record, each key's records in
 * their order (a record without a key is a group of its own): what processBatch is given on an ordered queue.
 */
export function groupedByKey(records: readonly ClaimedRecord[]): ClaimedRecord[] {
  const groups = new Map<string | ClaimedRecord, ClaimedRecord[]>();
  for (const record of records) {
    const group = record.key ?? record;
    const members = groups.get(group);
    if (members) members.push(record);
    else groups.set(group, [record]);
  }
  return [...groups.values()].flat();
}
