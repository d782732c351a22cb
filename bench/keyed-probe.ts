// What the keyed benchmark sees of a node's queue from inside: the queue backends' claim(), complete() and
// release() are wrapped for the time of a run, so that its window runs from the first claim to the completion of the batch
// that brings the records done to the target, and so that the claims themselves can be told apart (their
// latency, the records each one took, those that found nothing).
import type { ClaimedBatch, ClaimedRecord, RecordFailure } from '../src/queue/backend.js';
import { RedisQueueBackend } from '../src/queue/redis.js';
import { StoreQueueBackend } from '../src/queue/store-queue.js';
import type { Deadline } from './support.js';
import { now, pause } from './support.js';

/** One claim as the runner saw it. */
export interface ClaimSample {
  /** When it started, in ms from the start of the run's window. */
  readonly atMs: number;
  readonly ms: number;
  readonly records: number;
}

/** The claims and completions of one measured drain, on every queue backend of this process. */
export class Probe {
  readonly claims: ClaimSample[] = [];
  readonly #target: number;
  readonly #claimedAt = new Map<string, number>();
  #firstClaim: number | undefined;
  #doneAt: number | undefined;
  #completed = 0;
  #failed = 0;
  /** Records given back without being processed (a batch that lost its claim, or claimed ahead at the stop). */
  released = 0;
  /** Sum over the batches of the time from their claim's answer to their completion: batches held at once. */
  #heldMs = 0;

  constructor(target: number) {
    this.#target = target;
  }

  claimed(started: number, ended: number, batch: ClaimedBatch | undefined): void {
    if (this.#doneAt !== undefined) return;
    this.#firstClaim ??= started;
    this.claims.push({
      atMs: started - this.#firstClaim,
      ms: ended - started,
      records: batch?.records.length ?? 0,
    });
    if (batch) this.#claimedAt.set(batch.id, ended);
  }

  completed(batch: ClaimedBatch, failures: number, ended: number): void {
    if (this.#doneAt !== undefined) return;
    const claimed = this.#claimedAt.get(batch.id);
    if (claimed !== undefined) this.#heldMs += ended - claimed;
    this.#failed += failures;
    this.#completed += batch.records.length - failures;
    if (this.#completed >= this.#target) this.#doneAt = ended;
  }

  gaveBack(records: number): void {
    if (this.#doneAt === undefined) this.released += records;
  }

  /** Waits until the target was completed; the window in seconds. A failed record ends the run instead. */
  async finished(deadline: Deadline): Promise<number> {
    while (this.#doneAt === undefined) {
      if (this.#failed > 0) throw new Error(`${this.#failed} records failed: the handler must not fail here`);
      await pause(5, deadline.signal);
    }
    return this.seconds;
  }

  get seconds(): number {
    return ((this.#doneAt ?? now()) - (this.#firstClaim ?? now())) / 1000;
  }

  /** Batches held on average over the window (claimed, being processed or waiting to be): at most 2 × concurrency. */
  get held(): number {
    return this.seconds > 0 ? this.#heldMs / 1000 / this.seconds : 0;
  }
}

type Claim = (queue: string, consumer: string, max: number) => Promise<ClaimedBatch | undefined>;
type Release = (batch: ClaimedBatch, records: readonly ClaimedRecord[]) => Promise<void>;
type Complete = (
  batch: ClaimedBatch,
  failures: readonly RecordFailure[],
) => Promise<ReadonlyMap<string, string>>;

/** The methods wrapped, as properties (a prototype's methods are assignable to them). */
interface Observed {
  claim: Claim;
  complete: Complete;
  release: Release;
}

let current: Probe | undefined;

/** Wraps claim(), complete() and release() of both queue backends to report to `probe` until the returned function runs. */
export function observe(probe: Probe): () => void {
  current = probe;
  const restore = [wrap(StoreQueueBackend.prototype), wrap(RedisQueueBackend.prototype)];
  return () => {
    for (const undo of restore) undo();
    current = undefined;
  };
}

function wrap(prototype: Observed): () => void {
  const claim = prototype.claim;
  const complete = prototype.complete;
  const release = prototype.release;
  prototype.claim = async function (this: Observed, queue, consumer, max) {
    const started = now();
    const batch = await claim.call(this, queue, consumer, max);
    current?.claimed(started, now(), batch);
    return batch;
  };
  prototype.complete = async function (this: Observed, batch, failures) {
    const moved = await complete.call(this, batch, failures);
    current?.completed(batch, failures.length, now());
    return moved;
  };
  prototype.release = async function (this: Observed, batch, records) {
    await release.call(this, batch, records);
    current?.gaveBack(records.length);
  };
  return () => {
    prototype.claim = claim;
    prototype.complete = complete;
    prototype.release = release;
  };
}

/** The median of `values` (NaN for none). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}
