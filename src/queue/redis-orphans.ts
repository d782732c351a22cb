// Batches left behind in Redis: a processing key that the batches hash no longer names, left by a script
// that failed halfway before the scripts checked their keys (the completion deleted the batch's entry, then
// failed to push to the error queue). Nothing else names such a batch, so claim recovery looks for them: when
// it first recovers a queue, at most once a minute after that, and when a broken key of the queue is fixed.
import type { Redis } from 'ioredis';

import { callRedis } from '../redis/connection-errors.js';
import { scanProcessingKeys } from './redis-scripts.js';

const SCAN_EVERY_MS = 60_000;

/** What one search found: the batches with a processing key, listed before the batches hash was read. */
export type Scanned = ReadonlyArray<{ readonly id: string; readonly consumer: string }>;

export class OrphanBatches {
  readonly #client: Redis;
  /** Per queue: when its processing keys were last listed, and the orphans still to recover (id → consumer). */
  readonly #queues = new Map<string, { scannedAt: number; batches: Map<string, string> }>();

  constructor(client: Redis) {
    this.#client = client;
  }

  /** Lists the processing keys of the list `key` when a search is due; undefined otherwise. */
  async scan(queue: string, key: string): Promise<Scanned | undefined> {
    const known = this.#queues.get(queue);
    if (known && Date.now() - known.scannedAt < SCAN_EVERY_MS) return undefined;
    return callRedis(() => scanProcessingKeys(this.#client, key));
  }

  /**
   * The orphans of `queue` still to recover, with those `scanned` found: listed, and not in `batches` read
   * after (a script claims a batch, and frees it, with its entry at once). Delete an entry once recovered.
   */
  collect(
    queue: string,
    scanned: Scanned | undefined,
    batches: Readonly<Record<string, string>>,
  ): Map<string, string> {
    let known = this.#queues.get(queue);
    if (scanned) {
      known = { scannedAt: Date.now(), batches: known?.batches ?? new Map<string, string>() };
      this.#queues.set(queue, known);
      for (const { id, consumer } of scanned) if (!(id in batches)) known.batches.set(id, consumer);
    }
    return known?.batches ?? new Map<string, string>();
  }

  /** A broken key of the queue was fixed: search again on its next recovery. */
  searchAgain(queue: string): void {
    const known = this.#queues.get(queue);
    if (known) known.scannedAt = 0;
  }
}
