// The inline claim on the embedded store: a request's records become one claimed row of the queue; a
// backlog stores them unclaimed instead. Settling it removes the row and queues the failures; a claim whose
// consumer died becomes the request's records, one attempt each, marked so that each runs alone.
import { sql } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { RECOVERED_REASON } from '../../src/queue/backend.js';
import { StoreQueueBackend } from '../../src/queue/store-queue.js';
import type { TempStore } from '../support/pglite.js';
import { openTempStore } from '../support/pglite.js';

let temp: TempStore;
let backend: StoreQueueBackend;

beforeEach(async () => {
  temp = await openTempStore();
  backend = new StoreQueueBackend(temp.store);
  await backend.registerConsumer('alive', 'node');
}, 60_000);

afterEach(async () => {
  await backend.close();
  await temp.dispose();
});

async function rows(): Promise<
  Array<{ id: string; payload: string; claimed_by: unknown; attempts: number }>
> {
  const found = await temp.store.execute(
    sql`SELECT id::text AS id, convert_from(payload, 'UTF8') AS payload, claimed_by, attempts
        FROM baton_queue_records ORDER BY id`,
  );
  return found.map((row) => ({
    id: String(row['id']),
    payload: String(row['payload']),
    claimed_by: row['claimed_by'],
    attempts: Number(row['attempts']),
  }));
}

describe('the inline claim', () => {
  it('stores one claimed row, which settling removes, queueing the failures', async () => {
    const records = Array.from({ length: 1000 }, (_, index) => Buffer.from(`record ${index}`));
    const claim = await backend.inline?.claimInline('q', 'alive', records);
    if (!claim) throw new Error('no claim');
    expect(await backend.stats('q')).toEqual({ depth: 0, delayed: 0, inFlight: 1, errors: 0 });
    const moved = await temp.store.transaction((tx) =>
      backend.settleInline(tx, claim, {
        failures: [
          { position: 3, error: 'again', retryAt: new Date(0) },
          { position: 7, error: 'never', retryAt: undefined },
          { position: 9, error: 'never either', retryAt: undefined },
        ],
      }),
    );
    expect((await rows()).map((row) => [row.payload, row.attempts, row.claimed_by])).toEqual([
      ['record 3', 1, null],
    ]);
    const errors = await backend.listErrors('q', { limit: 10 });
    expect(errors.map((error) => [error.payload.toString(), error.error])).toEqual([
      ['record 7', 'never'],
      ['record 9', 'never either'],
    ]);
    expect([...moved]).toEqual([
      [7, errors[0]?.id],
      [9, errors[1]?.id],
    ]);
    await expect(temp.store.transaction((tx) => backend.settleInline(tx, claim, {}))).rejects.toThrow(
      /inline claim/,
    );
  }, 60_000);

  it('stores the records unclaimed behind a backlog', async () => {
    await backend.publish('q', [Buffer.from('older')]);
    expect(await backend.inline?.claimInline('q', 'alive', [Buffer.from('newer')])).toBeUndefined();
    expect((await rows()).map((row) => [row.payload, row.claimed_by])).toEqual([
      ['older', null],
      ['newer', null],
    ]);
  }, 60_000);

  it('is recovered as its records, one attempt each, once its consumer is dead; they come back marked', async () => {
    // A consumer of a process that died: not registered here.
    await backend.inline?.claimInline('q', 'dead', [Buffer.from('a'), Buffer.from('b')]);
    expect(await backend.recoverClaims('q', { maxAttempts: 5 })).toBe(2);
    expect((await rows()).map((row) => [row.payload, row.attempts, row.claimed_by])).toEqual([
      ['a', 1, null],
      ['b', 1, null],
    ]);
    const batch = await backend.claim('q', 'alive', 10);
    expect(batch?.records.map((record) => record.orphaned)).toEqual([true, true]);
    // Out of attempts: the error queue says why.
    await temp.store.execute(sql`UPDATE baton_queue_records SET claimed_by = 'dead'`);
    expect(await backend.recoverClaims('q', { maxAttempts: 2 })).toBe(2);
    const errors = await backend.listErrors('q', { limit: 10 });
    expect(errors.map((error) => [error.payload.toString(), error.attempts, error.error])).toEqual([
      ['a', 2, RECOVERED_REASON],
      ['b', 2, RECOVERED_REASON],
    ]);
  }, 60_000);

  it('marks no record that failed by throwing', async () => {
    await backend.publish('q', [Buffer.from('a')]);
    const batch = await backend.claim('q', 'alive', 10);
    await backend.complete(batch!, [{ record: batch!.records[0]!, error: 'boom', retryAt: new Date(0) }]);
    const again = await backend.claim('q', 'alive', 10);
    expect(again?.records[0]?.orphaned).toBeUndefined();
    expect(again?.records[0]?.attempts).toBe(1);
  }, 60_000);
});
