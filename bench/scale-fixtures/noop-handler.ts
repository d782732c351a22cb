// The handler of the scale benchmark's queue: it does nothing, so that the drain rate measures what the
// queue costs (claim, acknowledgement, bookkeeping) rather than a handler's work.
import type { Tx } from '../../src/index.js';

export async function processBatch(_tx: Tx, _records: readonly Buffer[]): Promise<void> {}
