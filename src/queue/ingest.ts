// Inline ingest: where a queue's backend offers it (the store queue of the embedded store), records that
// arrive over HTTP or the CLI are processed within the request. They are first committed as one claim row
// of the queue (one short statement), so that a record that kills the process is counted at the next start
// and reaches the error queue after max_attempts, as on the queue path; then the handler runs and settles
// the claim in one transaction: one write per record, plus two per request. A queue with a backlog takes
// the queue path, so records do not overtake older ones. Failures of a small request are isolated within
// it; a request with more failures goes back to the queue, whose runner isolates them in batches. Delayed
// records are never processed inline: they are published, and wait in the queue for their time. On a queue
// with a payload schema, a request with a record that does not parse is refused whole, before anything is stored.
import { BatchFailedError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type {
  ClaimedRecord,
  InlineClaim,
  InlineFailure,
  InlineIngest,
  QueueBackend,
  RecordFailure,
} from './backend.js';
import { anyValue } from '../util/per-record.js';
import type { RecordOptions } from './record-options.js';
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
  /**
   * What the publish says of its records (checked): records with a delay are published, never run inline;
   * records with keys or idempotency ids take the queue path too, where their order and dedup are kept.
   */
  readonly records?: RecordOptions | undefined;
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
  processor.checkPayloads(records);
  const given = withKeys(options.records ?? {}, processor.recordKeys(records, options.records?.keys));
  if (anyValue(given.delays) || anyValue(given.keys) || anyValue(given.ids)) {
    return { accepted: await backend.publish(processor.queue.name, records, given), processed: 0 };
  }
  // A rate-limited queue runs its records through its runner, which keeps the rate.
  const inline = processor.queue.inline && processor.queue.rateLimit === undefined;
  if (backend.inline && inline && options.inline) {
    const started = performance.now();
    const claim = await backend.inline.claimInline(processor.queue.name, options.consumer, records);
    // undefined: a backlog, and the records were stored unclaimed for the runner.
    if (!claim) return { accepted: records.length, processed: 0 };
    const processed = await processInline(backend.inline, processor, claim, options.log);
    if (processed > 0) options.onCommitted?.((performance.now() - started) / 1000);
    return { accepted: records.length, processed };
  }
  await backend.publish(processor.queue.name, records);
  return { accepted: records.length, processed: 0 };
}

/** Runs the handler over a claimed request and settles it; returns how many records committed. */
async function processInline(
  inline: InlineIngest,
  processor: RecordProcessor,
  claim: InlineClaim,
  log: Logger,
): Promise<number> {
  const queue = processor.queue.name;
  const count = claim.records.length;
  let settled: { failures: InlineFailure[]; moved: ReadonlyMap<number, string> } | undefined;
  try {
    settled = await runInline(inline, processor, claim);
  } catch (error) {
    // Stopping, or the store failed: the records go back to the queue for the runner; if even that fails,
    // the claim stays and is recovered at the next start (with an attempt counted).
    await requeue(inline, claim);
    log.warn(
      { queue, records: count, err: describeError(error) },
      `queue "${queue}": a request's records could not be processed inline; they wait in the queue`,
    );
    return 0;
  }
  if (!settled) {
    // Too many failures for the request: its records go back to the queue unprocessed, no attempt counted.
    await requeue(inline, claim);
    log.warn(
      { queue, records: count, maxFailures: INLINE_MAX_FAILURES },
      `queue "${queue}": more than ${INLINE_MAX_FAILURES} of a request's ${count} records failed; they wait in the queue, whose runner isolates failures in batches`,
    );
    return 0;
  }
  const { failures, moved } = settled;
  if (failures.length > 0) inline.notify(queue);
  processor.counters.processed += count - failures.length;
  processor.counters.failed += failures.length;
  // Logged as a batch's failures are; a record is named by its position in the request until it has an id.
  const asRecord = (position: number): ClaimedRecord => ({
    id: String(position),
    position,
    payload: claim.records[position] as Buffer,
    attempts: 0,
    enqueuedAt: new Date(),
  });
  logFailures(
    log,
    queue,
    failures.map((failure): RecordFailure => ({ ...failure, record: asRecord(failure.position) })),
    new Map([...moved].map(([position, errorId]) => [String(position), errorId])),
  );
  return count - failures.length;
}

/**
 * The request's records in one transaction that also settles their claim; when a record fails, again in a
 * new one with failures isolated under savepoints. Resolves to the failures, or undefined past
 * INLINE_MAX_FAILURES (nothing committed).
 */
async function runInline(
  inline: InlineIngest,
  processor: RecordProcessor,
  claim: InlineClaim,
): Promise<{ failures: InlineFailure[]; moved: ReadonlyMap<number, string> } | undefined> {
  const ref = { batch: `inline ${claim.id}`, ids: [] };
  try {
    await inline.transaction(async (tx) => {
      await inline.settleInline(tx, claim, {});
      await processor.runWhole(tx, claim.records, ref);
    });
    return { failures: [], moved: new Map() };
  } catch (error) {
    if (!(error instanceof BatchFailedError)) throw error;
  }
  try {
    return await inline.transaction(async (tx) => {
      const outcome = await processor.runBounded(tx, claim.records, {
        claim: ref,
        maxFailures: INLINE_MAX_FAILURES,
      });
      // Rolls back what the records that succeeded so far wrote.
      if (!outcome) throw new TooManyFailures();
      const failures = outcome.failed.map(({ index, error, permanent }): InlineFailure => ({
        position: index,
        error,
        retryAt: permanent ? undefined : processor.retryAt(0),
      }));
      return { failures, moved: await inline.settleInline(tx, claim, { failures }) };
    });
  } catch (error) {
    if (error instanceof TooManyFailures) return undefined;
    throw error;
  }
}

/** The claim's records back to the queue, unclaimed and uncounted. */
async function requeue(inline: InlineIngest, claim: InlineClaim): Promise<void> {
  await inline.transaction((tx) => inline.settleInline(tx, claim, { requeue: true }));
  inline.notify(claim.queue);
}

/** Internal: rolls back an isolating transaction that found more than INLINE_MAX_FAILURES failures. */
class TooManyFailures extends Error {}

function withKeys(options: RecordOptions, keys: RecordOptions['keys']): RecordOptions {
  return keys === options.keys ? options : { ...options, keys };
}
