// Inline ingest: where a queue's backend offers it (the store queue of the embedded store), records that
// arrive over HTTP or the CLI may be processed inline, the handler and the records' fate committed in the
// request's own transaction: one write per record instead of three (enqueue, claim, acknowledge). A queue
// with a backlog takes the queue path, so records do not overtake older ones; records that fail go to the
// queue to be retried there.
import { BatchFailedError } from '../errors.js';
import type { InlineFailure, InlineIngest, QueueBackend } from './backend.js';
import type { RecordProcessor } from './processor.js';

export interface IngestResult {
  /** Records accepted (stored in the sink, queued, or moved to the error queue): all of them. */
  readonly accepted: number;
  /** Of those, records whose handler ran and committed within the request. */
  readonly processed: number;
}

/**
 * Accepts records into a queue: processed inline when the backend offers it, the queue allows it
 * (`inline = true`) and `options.inline` does (the node runs), else published to the queue.
 */
export async function ingestRecords(
  backend: QueueBackend,
  processor: RecordProcessor,
  records: readonly Buffer[],
  options: { inline: boolean; onCommitted?: (seconds: number) => void },
): Promise<IngestResult> {
  if (records.length === 0) return { accepted: 0, processed: 0 };
  if (backend.inline && processor.queue.inline && options.inline) {
    const started = performance.now();
    const result = await ingestInline(backend.inline, processor, records);
    if (result) {
      if (result.processed > 0) options.onCommitted?.((performance.now() - started) / 1000);
      return result;
    }
  }
  await backend.publish(processor.queue.name, records);
  return { accepted: records.length, processed: 0 };
}

/** Processes `records` inline; undefined when the queue has a backlog (the caller then publishes them). */
async function ingestInline(
  inline: InlineIngest,
  processor: RecordProcessor,
  records: readonly Buffer[],
): Promise<IngestResult | undefined> {
  const queue = processor.queue.name;
  const result = await ingestOnce(inline, processor, records, 'whole').catch((error: unknown) => {
    if (!(error instanceof BatchFailedError)) throw error;
    // A record failed: roll back, and isolate the failures under savepoints in a new transaction.
    return ingestOnce(inline, processor, records, 'isolate');
  });
  if (!result) return undefined;
  processor.counters.processed += result.processed;
  processor.counters.failed += result.failed;
  if (result.failed > 0) inline.notify(queue);
  return { accepted: records.length, processed: result.processed };
}

/** One ingest transaction; undefined when the queue has a backlog. */
function ingestOnce(
  inline: InlineIngest,
  processor: RecordProcessor,
  records: readonly Buffer[],
  mode: 'whole' | 'isolate',
): Promise<{ processed: number; failed: number } | undefined> {
  const queue = processor.queue.name;
  return inline.transaction(async (tx) => {
    if (await inline.hasBacklog(tx, queue)) return undefined;
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
    await inline.enqueueFailures(tx, queue, failures);
    return { processed: outcome.succeeded.length, failed: failures.length };
  });
}
