// Embedded ingest: on the embedded store, records that arrive over HTTP or the CLI may be processed inline,
// the handler and the records' fate committed in the request's own transaction: one write per record
// instead of three (enqueue, claim, acknowledge). A queue with a backlog takes the queue path, so records
// do not overtake older ones; records that fail go to the queue to be retried there.
import type { RecordProcessor } from './processor.js';
import { BatchFailedError } from './processor.js';
import type { InlineFailure, StoreQueueBackend } from './store-queue.js';
import type { Store } from '../store/store.js';

export interface IngestResult {
  /** Records accepted (stored in the sink, queued, or moved to the error queue): all of them. */
  readonly accepted: number;
  /** Of those, records whose handler ran and committed within the request. */
  readonly processed: number;
}

export async function ingestInline(
  store: Store,
  backend: StoreQueueBackend,
  processor: RecordProcessor,
  records: readonly Buffer[],
): Promise<IngestResult> {
  const queue = processor.queue.name;
  const result = await ingestOnce(store, backend, processor, records, 'whole').catch((error: unknown) => {
    if (!(error instanceof BatchFailedError)) throw error;
    // A record failed: roll back, and isolate the failures under savepoints in a new transaction.
    return ingestOnce(store, backend, processor, records, 'isolate');
  });
  if (!result) {
    await backend.publish(queue, records);
    return { accepted: records.length, processed: 0 };
  }
  processor.counters.processed += result.processed;
  processor.counters.failed += result.failed;
  if (result.failed > 0) backend.notify(queue);
  return { accepted: records.length, processed: result.processed };
}

/** One ingest transaction; undefined when the queue has a backlog (the records then take the queue path). */
function ingestOnce(
  store: Store,
  backend: StoreQueueBackend,
  processor: RecordProcessor,
  records: readonly Buffer[],
  mode: 'whole' | 'isolate',
): Promise<{ processed: number; failed: number } | undefined> {
  const queue = processor.queue.name;
  return store.transaction(async (tx) => {
    if (await backend.hasBacklog(tx, queue)) return undefined;
    if (mode === 'whole') {
      await processor.runWhole(tx, records);
      return { processed: records.length, failed: 0 };
    }
    const outcome = await processor.run(tx, records);
    const failures = outcome.failed.map(({ index, error }): InlineFailure => ({
      payload: records[index] as Buffer,
      error,
      retryAt: processor.retryAt(0),
    }));
    await backend.enqueueFailures(tx, queue, failures);
    return { processed: outcome.succeeded.length, failed: failures.length };
  });
}
