// The queue runner: `concurrency` loops per queue that claim a batch, run the handler and acknowledge the
// batch in one sink transaction. Failed records are retried after back-off, then go to the error queue.
// Stopping stops the claiming and lets in-flight batches finish; the node aborts them past its deadline.
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import { backoffDelay } from '../util/backoff.js';
import { sleep } from '../util/sleep.js';
import type { ClaimedBatch, ClaimedRecord, QueueBackend, RecordFailure } from './backend.js';
import type { RecordProcessor } from './processor.js';

/** How long an idle consumer waits for a wake-up before it looks again (retries become ready by time). */
const IDLE_POLL_MS = 500;

export class QueueRunner {
  readonly #processor: RecordProcessor;
  readonly #backend: QueueBackend;
  readonly #store: Store;
  readonly #consumer: string;
  readonly #log: Logger;
  readonly #stopping = new AbortController();
  #loops: Array<Promise<void>> = [];

  constructor(options: {
    processor: RecordProcessor;
    backend: QueueBackend;
    store: Store;
    consumer: string;
    log: Logger;
  }) {
    this.#processor = options.processor;
    this.#backend = options.backend;
    this.#store = options.store;
    this.#consumer = options.consumer;
    this.#log = options.log;
  }

  get queue(): string {
    return this.#processor.queue.name;
  }

  start(): void {
    if (this.#loops.length > 0) return;
    // One batch at a time on an exclusive (single-connection) store: more loops would only queue up.
    const loops = this.#store.exclusive ? 1 : this.#processor.queue.concurrency;
    for (let index = 0; index < loops; index++) this.#loops.push(this.#loop());
  }

  /** Stops claiming and resolves when the in-flight batches have finished. */
  async stop(): Promise<void> {
    this.#stopping.abort();
    await Promise.all(this.#loops);
  }

  async #loop(): Promise<void> {
    const { batchSize } = this.#processor.queue;
    let failures = 0;
    while (!this.#stopping.signal.aborted) {
      try {
        const batch = await this.#backend.claim(this.queue, this.#consumer, batchSize);
        failures = 0;
        if (batch) await this.#process(batch, batch.records);
        else await this.#backend.waitForRecords(this.queue, IDLE_POLL_MS, this.#stopping.signal);
      } catch (error) {
        failures += 1;
        const delay = backoffDelay(failures, { initialMs: 1000, maxMs: 32_000 });
        this.#log.error(
          { queue: this.queue, err: describeError(error), retryInMs: delay },
          `queue "${this.queue}": consuming failed; retrying in ${delay} ms`,
        );
        await sleep(delay, this.#stopping.signal);
      }
    }
  }

  /**
   * Runs `records` of `batch` in one transaction. If the transaction itself fails (not a handler error,
   * which the processor isolates, but e.g. a commit that violates a deferred constraint), the records
   * are split and retried in smaller transactions until the failing record is found.
   */
  async #process(batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<void> {
    const processor = this.#processor;
    const payloads = records.map((record) => record.payload);
    let failures: RecordFailure[];
    let processed: number;
    try {
      ({ failures, processed } = await this.#store.transaction(async (tx) => {
        const outcome = await processor.run(tx, payloads, (index) => ({ record: records[index]?.id }));
        await this.#backend.acknowledge(
          tx,
          batch,
          outcome.succeeded.map((index) => records[index] as ClaimedRecord),
        );
        return {
          processed: outcome.succeeded.length,
          failures: outcome.failed.map(({ index, error }): RecordFailure => {
            const record = records[index] as ClaimedRecord;
            return { record, error, retryAt: processor.retryAt(record.attempts) };
          }),
        };
      }));
    } catch (error) {
      if (this.#stopping.signal.aborted && isAbort(error)) {
        await this.#backend.release(batch, records);
        return;
      }
      if (records.length > 1) {
        const middle = Math.ceil(records.length / 2);
        await this.#process(batch, records.slice(0, middle));
        await this.#process(batch, records.slice(middle));
        return;
      }
      const record = records[0] as ClaimedRecord;
      failures = [{ record, error: describeError(error), retryAt: processor.retryAt(record.attempts) }];
      processed = 0;
    }
    processor.counters.processed += processed;
    processor.counters.failed += failures.length;
    if (failures.length > 0) {
      await this.#backend.fail(batch, failures);
      for (const failure of failures) {
        if (!failure.retryAt) {
          this.#log.error(
            {
              queue: this.queue,
              record: failure.record.id,
              attempts: failure.record.attempts + 1,
              err: failure.error,
            },
            `queue "${this.queue}": record ${failure.record.id} moved to the error queue errors-${this.queue}`,
          );
        }
      }
    }
  }
}

function isAbort(error: unknown): boolean {
  return error instanceof Error && (error.name === 'AbortError' || error.name === 'NodeStoppingError');
}
