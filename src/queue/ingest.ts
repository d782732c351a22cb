// Embedded ingest: on the embedded store, records that arrive over HTTP or the CLI may be processed inline,
// the handler and the records' fate committed in the request's own transaction: one write per record
// instead of three (enqueue, claim, acknowledge). A queue with a backlog takes the queue path, so records
// do not overtake older ones; records that fail go to the queue to be retried there.
import type { RecordProcessor } from './processor.js';
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
  const result = await store.transaction(async (tx) => {
    if (await backend.hasBacklog(tx, queue)) return undefined;
    const outcome = await processor.run(tx, records);
    const failures = outcome.failed.map(({ index, error }): InlineFailure => ({
      payload: records[index] as Buffer,
      error,
      retryAt: processor.retryAt(0),
    }));
    await backend.enqueueFailures(tx, queue, failures);
    return { processed: outcome.succeeded.length, failed: failures.length };
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
