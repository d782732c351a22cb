// Inline ingest: where a queue's backend offers it (the store queue of the embedded store), records that
// arrive over HTTP or the CLI are processed within the request. They are first committed as records of the
// queue claimed by this node (one statement), so that a record that kills the process is counted at the next
// start and reaches the error queue after max_attempts, as on the queue path; then the handler runs and
// acknowledges them in one transaction. A queue with a backlog takes the queue path, so records do not
// overtake older ones. Failures of a small request are isolated within it; a request with more failures
// goes back to the queue, where the runner isolates them in batches, so one request never holds the node.
import { BatchFailedError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ClaimedBatch, ClaimedRecord, InlineIngest, QueueBackend, RecordFailure } from './backend.js';
import type { RecordProcessor } from './processor.js';
import { logFailures } from './processor.js';

/** A request whose whole run failed is isolated in the request only while this many records fail. */
export const INLINE_MAX_FAILURES = 16;

export interface IngestResult {
  /** Records accepted (stored in the sink, queued, or moved to the error queue): all of them. */
  readonly accepted: number;
  /** Of those, records whose handler ran and committed within the request. */
  readonly processed: number;
}

export interface IngestOptions {
  /** The queue allows inline processing now (the node runs). */
  readonly inline: boolean;
  /** The consumer that claims the request's records: the node's. */
  readonly consumer: string;
  readonly log: Logger;
  readonly onCommitted?: (seconds: number) => void;
}

/**
 * Accepts records into a queue: processed inline when the backend offers it, the queue allows it
 * (`inline = true`) and `options.inline` does (the node runs), else published to the queue.
 */
export async function ingestRecords(
  backend: QueueBackend,
  processor: RecordProcessor,
  records: readonly Buffer[],
  options: IngestOptions,
): Promise<IngestResult> {
  if (records.length === 0) return { accepted: 0, processed: 0 };
  if (backend.inline && processor.queue.inline && options.inline) {
    const started = performance.now();
    const batch = await backend.inline.claimInline(processor.queue.name, options.consumer, records);
    // undefined: a backlog, and the records were stored unclaimed for the runner.
    if (!batch) return { accepted: records.length, processed: 0 };
    const processed = await processInline(backend, backend.inline, processor, batch, options.log);
    if (processed > 0) options.onCommitted?.((performance.now() - started) / 1000);
    return { accepted: records.length, processed };
  }
  await backend.publish(processor.queue.name, records);
  return { accepted: records.length, processed: 0 };
}

/** Runs the handler over a claimed request and settles it; returns how many records committed. */
async function processInline(
  backend: QueueBackend,
  inline: InlineIngest,
  processor: RecordProcessor,
  batch: ClaimedBatch,
  log: Logger,
): Promise<number> {
  const queue = processor.queue.name;
  let failures: RecordFailure[] | undefined;
  try {
    failures = await runInline(backend, inline, processor, batch);
  } catch (error) {
    // Stopping, or the store failed: the records were claimed and stay in the queue. Give them back for the
    // runner; if even that fails, the claim is recovered at the next start (with an attempt counted).
    await backend.release(batch, batch.records);
    log.warn(
      { queue, records: batch.records.length, err: describeError(error) },
      `queue "${queue}": a request's records could not be processed inline; they wait in the queue`,
    );
    return 0;
  }
  if (!failures) {
    // Too many failures for the request: its records go back to the queue unprocessed, no attempt counted.
    await backend.release(batch, batch.records);
    log.warn(
      { queue, records: batch.records.length, maxFailures: INLINE_MAX_FAILURES },
      `queue "${queue}": more than ${INLINE_MAX_FAILURES} of a request's ${batch.records.length} records failed; they wait in the queue, whose runner isolates failures in batches`,
    );
    return 0;
  }
  const moved = await backend.complete(batch, failures);
  const processed = batch.records.length - failures.length;
  processor.counters.processed += processed;
  processor.counters.failed += failures.length;
  logFailures(log, queue, failures, moved);
  return processed;
}

/**
 * The request's records in one transaction with their acknowledgement; when a record fails, again in a new
 * one with failures isolated under savepoints. Resolves to the failures, or undefined past
 * INLINE_MAX_FAILURES (nothing committed).
 */
async function runInline(
  backend: QueueBackend,
  inline: InlineIngest,
  processor: RecordProcessor,
  batch: ClaimedBatch,
): Promise<RecordFailure[] | undefined> {
  const payloads = batch.records.map((record) => record.payload);
  const claim = { batch: batch.id, ids: batch.records.map((record) => record.id) };
  try {
    await inline.transaction(async (tx) => {
      await backend.acknowledge(tx, batch, batch.records);
      await processor.runWhole(tx, payloads, claim);
    });
    return [];
  } catch (error) {
    if (!(error instanceof BatchFailedError)) throw error;
  }
  try {
    return await inline.transaction(async (tx) => {
      const outcome = await processor.runBounded(tx, payloads, { claim, maxFailures: INLINE_MAX_FAILURES });
      // Rolls back what the records that succeeded so far wrote.
      if (!outcome) throw new TooManyFailures();
      const succeeded = outcome.succeeded.map((index) => batch.records[index] as ClaimedRecord);
      await backend.acknowledge(tx, batch, succeeded);
      return outcome.failed.map(({ index, error }): RecordFailure => {
        const record = batch.records[index] as ClaimedRecord;
        return { record, error, retryAt: processor.retryAt(record.attempts) };
      });
    });
  } catch (error) {
    if (error instanceof TooManyFailures) return undefined;
    throw error;
  }
}

/** Internal: rolls back an isolating transaction that found more than INLINE_MAX_FAILURES failures. */
class TooManyFailures extends Error {}
