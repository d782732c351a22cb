// The behaviour every QueueBackend adapter must have, run against each adapter by its own test file:
// describeQueueBackend('pglite', makeBackend). Backend-specific behaviour is tested beside the adapter.
import { randomUUID } from 'node:crypto';

import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import type { ClaimedBatch, QueueBackend } from '../../src/queue/backend.js';
import { ClaimLostError } from '../../src/errors.js';
import type { Store } from '../../src/store/store.js';
import { executeIn } from '../../src/store/store.js';

export interface BackendUnderTest {
  readonly backend: QueueBackend;
  /** The sink the backend acknowledges into. */
  readonly store: Store;
  dispose(): Promise<void>;
}

const bytes = (text: string): Buffer => Buffer.from(text);

export function describeQueueBackend(name: string, makeBackend: () => Promise<BackendUnderTest>): void {
  describe(`QueueBackend contract: ${name}`, () => {
    let subject: BackendUnderTest;
    let queue: string;
    // One backend for the suite (opening a store is slow); each test has a queue of its own.
    beforeAll(async () => {
      subject = await makeBackend();
    });
    afterAll(async () => {
      await subject.dispose();
    });
    beforeEach(() => {
      queue = `q-${randomUUID().slice(0, 8)}`;
    });

    it('delivers published records oldest first, as the same bytes', async () => {
      const { backend } = subject;
      const binary = Buffer.from([0, 255, 10, 13, 0x80]);
      expect(await backend.publish(queue, [bytes('a'), binary, bytes('c')])).toBe(3);
      const batch = await backend.claim(queue, 'c1', 10);
      expect(batch?.records.map((r) => r.payload)).toEqual([bytes('a'), binary, bytes('c')]);
      expect(batch?.records.every((r) => r.attempts === 0)).toBe(true);
    });

    it('claims at most max records and never hands one record to two consumers', async () => {
      const { backend } = subject;
      await backend.publish(
        queue,
        Array.from({ length: 25 }, (_, i) => bytes(`r${i}`)),
      );
      const [first, second, third] = await Promise.all([
        backend.claim(queue, 'c1', 10),
        backend.claim(queue, 'c2', 10),
        backend.claim(queue, 'c3', 10),
      ]);
      const ids = [first, second, third].flatMap((b) => b?.records.map((r) => r.id) ?? []);
      expect(ids).toHaveLength(25);
      expect(new Set(ids).size).toBe(25);
      expect(await backend.claim(queue, 'c4', 10)).toBeUndefined();
      expect(await backend.stats(queue)).toMatchObject({ depth: 0, inFlight: 25, errors: 0 });
    });

    it('acknowledges inside the sink transaction: a rollback leaves the records claimable again', async () => {
      const { backend, store } = subject;
      await backend.publish(queue, [bytes('x')]);
      const batch = await backend.claim(queue, 'c1', 10);
      if (!batch) throw new Error('no batch');
      await expect(
        store.transaction(async (tx) => {
          await backend.acknowledge(tx, batch, batch.records);
          throw new Error('handler failed after ack');
        }),
      ).rejects.toThrow('handler failed after ack');
      await backend.release(batch, batch.records);
      const again = await backend.claim(queue, 'c1', 10);
      expect(again?.records.map((r) => r.payload)).toEqual([bytes('x')]);
    });

    it('a committed acknowledgement commits with the handler effect, and the record is gone', async () => {
      const { backend, store } = subject;
      const table = `sink_${randomUUID().replace(/-/g, '').slice(0, 8)}`;
      await store.execute(sql.raw(`CREATE TABLE ${table} (v text)`));
      await backend.publish(queue, [bytes('one'), bytes('two')]);
      const batch = await backend.claim(queue, 'c1', 10);
      if (!batch) throw new Error('no batch');
      await store.transaction(async (tx) => {
        for (const record of batch.records) {
          await executeIn(
            tx,
            sql`INSERT INTO ${sql.identifier(table)} (v) VALUES (${record.payload.toString()})`,
          );
        }
        await backend.acknowledge(tx, batch, batch.records);
      });
      const rows = await store.execute(sql.raw(`SELECT v FROM ${table} ORDER BY v`));
      expect(rows.map((r) => r['v'])).toEqual(['one', 'two']);
      expect(await backend.stats(queue)).toMatchObject({ depth: 0, inFlight: 0 });
    });

    it('counts a failed attempt and redelivers after the retry time', async () => {
      const { backend } = subject;
      await backend.publish(queue, [bytes('flaky')]);
      const batch = await backend.claim(queue, 'c1', 10);
      if (!batch) throw new Error('no batch');
      const record = batch.records[0]!;
      await backend.complete(batch, [{ record, error: 'boom', retryAt: new Date(Date.now() + 300) }]);
      expect(await backend.claim(queue, 'c1', 10)).toBeUndefined();
      await new Promise((resolve) => setTimeout(resolve, 400));
      const again = await backend.claim(queue, 'c1', 10);
      expect(again?.records[0]?.attempts).toBe(1);
    });

    it('moves a record out of attempts to the error queue with reason and attempts, and replays it', async () => {
      const { backend } = subject;
      await backend.publish(queue, [bytes('bad')]);
      const batch = await backend.claim(queue, 'c1', 10);
      if (!batch) throw new Error('no batch');
      await backend.complete(batch, [
        { record: batch.records[0]!, error: 'SyntaxError: not JSON', retryAt: undefined },
      ]);
      const errors = await backend.listErrors(queue, { limit: 10 });
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatchObject({ error: 'SyntaxError: not JSON', attempts: 1, payload: bytes('bad') });
      expect(await backend.stats(queue)).toMatchObject({ depth: 0, inFlight: 0, errors: 1 });

      expect(await backend.replayErrors(queue, { limit: 100 })).toBe(1);
      expect(await backend.stats(queue)).toMatchObject({ depth: 1, errors: 0 });
      const replayed = await backend.claim(queue, 'c1', 10);
      expect(replayed?.records[0]).toMatchObject({ payload: bytes('bad'), attempts: 0 });
    });

    it('says the id that listErrors gives each record complete() moved to the error queue', async () => {
      const { backend, store } = subject;
      await backend.publish(queue, [bytes('ok'), bytes('again'), bytes('bad')]);
      const batch = await backend.claim(queue, 'c1', 10);
      if (!batch) throw new Error('no batch');
      const [ok, again, bad] = batch.records;
      await store.transaction((tx) => backend.acknowledge(tx, batch, [ok!]));
      const moved = await backend.complete(batch, [
        { record: again!, error: 'x', retryAt: new Date(Date.now() + 60_000) },
        { record: bad!, error: 'y', retryAt: undefined },
      ]);
      const errors = await backend.listErrors(queue, { limit: 10 });
      expect(errors.map((e) => e.payload)).toEqual([bytes('bad')]);
      expect([...moved]).toEqual([[bad!.id, errors[0]!.id]]);
    });

    it('replays chosen error records only, and drops others for good', async () => {
      const { backend } = subject;
      await backend.publish(queue, [bytes('e1'), bytes('e2'), bytes('e3')]);
      const batch = await backend.claim(queue, 'c1', 10);
      if (!batch) throw new Error('no batch');
      await backend.complete(
        batch,
        batch.records.map((record) => ({ record, error: 'x', retryAt: undefined })),
      );
      const [e1, e2, e3] = await backend.listErrors(queue, { limit: 10 });
      expect(await backend.replayErrors(queue, { ids: [e2!.id], limit: 10 })).toBe(1);
      expect(await backend.dropErrors(queue, [e1!.id])).toBe(1);
      expect((await backend.listErrors(queue, { limit: 10 })).map((e) => e.id)).toEqual([e3!.id]);
      expect((await backend.claim(queue, 'c1', 10))?.records.map((r) => r.payload)).toEqual([bytes('e2')]);
    });

    it('pages the error queue in numeric id order, forwards with afterId and back with beforeId', async () => {
      const { backend } = subject;
      const total = 1_005;
      await backend.publish(
        queue,
        Array.from({ length: total }, (_, i) => bytes(`e${i}`)),
      );
      for (
        let batch = await backend.claim(queue, 'c1', 500);
        batch;
        batch = await backend.claim(queue, 'c1', 500)
      ) {
        await backend.complete(
          batch,
          batch.records.map((record) => ({ record, error: 'x', retryAt: undefined })),
        );
      }
      // Pages of 9: with ids from 1, a page ends at 9, 99 and 999, the last ids before one more digit.
      const forwards: bigint[] = [];
      for (let page = await backend.listErrors(queue, { limit: 9 }); page.length > 0;) {
        forwards.push(...page.map((record) => BigInt(record.id)));
        page = await backend.listErrors(queue, { limit: 9, afterId: page.at(-1)!.id });
      }
      expect(forwards).toHaveLength(total);
      expect(forwards.every((id, i) => i === 0 || id > forwards[i - 1]!)).toBe(true);
      expect(forwards.some((id) => id < 100n) && forwards.some((id) => id >= 1000n)).toBe(true);
      expect(
        (await backend.listErrors(queue, { limit: total })).map((record) => record.payload.toString()),
      ).toEqual(Array.from({ length: total }, (_, i) => `e${i}`));

      const backwards: bigint[] = [];
      const after = String(forwards[0]! - 1n);
      let before = String(forwards.at(-1)! + 1n);
      for (let page = await backend.listErrors(queue, { limit: 9, beforeId: before }); page.length > 0;) {
        const ids = page.map((record) => BigInt(record.id));
        expect(ids.every((id, i) => i === 0 || id > ids[i - 1]!)).toBe(true);
        backwards.unshift(...ids);
        before = page[0]!.id;
        page = await backend.listErrors(queue, { limit: 9, beforeId: before, afterId: after });
      }
      expect(backwards).toEqual(forwards);
      // Between two cursors: the newest below the one, above the other.
      const [, second, third, fourth, fifth] = forwards.map(String);
      expect(
        (await backend.listErrors(queue, { limit: 2, afterId: second!, beforeId: fifth! })).map((r) => r.id),
      ).toEqual([third, fourth]);
    });

    it('recovers the claims of a gone consumer, counting the attempt, and leaves live ones alone', async () => {
      const { backend } = subject;
      const alive = `alive-${queue}`;
      await backend.registerConsumer(alive, 'test-node');
      await backend.publish(queue, [bytes('a'), bytes('b')]);
      await backend.claim(queue, `dead-${queue}`, 10);
      expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(2);
      const batch = await backend.claim(queue, alive, 10);
      expect(batch?.records.map((r) => r.attempts)).toEqual([1, 1]);
      expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(0);
      await backend.unregisterConsumer(alive);
    });

    it('sends a recovered record out of attempts to the error queue (a record that kills its consumer)', async () => {
      const { backend } = subject;
      await backend.publish(queue, [bytes('poison')]);
      await backend.claim(queue, `dead-${queue}`, 10);
      expect(await backend.recoverClaims(queue, { maxAttempts: 1 })).toBe(1);
      const errors = await backend.listErrors(queue, { limit: 10 });
      expect(errors[0]?.payload).toEqual(bytes('poison'));
      expect(errors[0]?.error).toMatch(/stopped while processing/);
    });

    it('refuses to acknowledge records whose claim was recovered meanwhile (no double effect)', async () => {
      const { backend, store } = subject;
      await backend.publish(queue, [bytes('contested')]);
      const stale = await backend.claim(queue, `presumed-dead-${queue}`, 10);
      if (!stale) throw new Error('no batch');
      expect(await backend.recoverClaims(queue, { maxAttempts: 5 })).toBe(1);
      await expect(
        store.transaction((tx) => backend.acknowledge(tx, stale, stale.records)),
      ).rejects.toBeInstanceOf(ClaimLostError);
      expect((await backend.claim(queue, `next-${queue}`, 10))?.records.map((r) => r.payload)).toEqual([
        bytes('contested'),
      ]);
    });

    it('keeps queues apart', async () => {
      const { backend } = subject;
      const other = `${queue}-other`;
      await backend.publish(queue, [bytes('mine')]);
      await backend.publish(other, [bytes('theirs')]);
      expect((await backend.claim(queue, 'c1', 10))?.records.map((r) => r.payload)).toEqual([bytes('mine')]);
      expect((await backend.stats(other)).depth).toBe(1);
    });

    /** Claims until a batch comes (every 50 ms, up to `limitMs`); with the time just after it came. */
    async function claimWhenDue(limitMs = 30_000): Promise<{ batch: ClaimedBatch; at: number }> {
      const deadline = Date.now() + limitMs;
      for (;;) {
        const batch = await subject.backend.claim(queue, 'c1', 10);
        if (batch) return { batch, at: Date.now() };
        if (Date.now() > deadline) throw new Error(`nothing claimable after ${limitMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }

    it('never claims a delayed record before its time, then delivers it once with no attempt counted', async () => {
      const { backend } = subject;
      const published = Date.now();
      await backend.publish(queue, [bytes('later')], { delays: { delayMs: 1_500 } });
      // Waiting: part of the depth, and counted as delayed.
      expect(await backend.stats(queue)).toMatchObject({ depth: 1, delayed: 1, inFlight: 0 });
      const { batch, at } = await claimWhenDue();
      expect(at - published).toBeGreaterThanOrEqual(1_500);
      expect(batch.records.map((r) => [r.payload, r.attempts])).toEqual([[bytes('later'), 0]]);
      expect(await backend.stats(queue)).toMatchObject({ depth: 0, delayed: 0, inFlight: 1 });
      await subject.store.transaction((tx) => backend.acknowledge(tx, batch, batch.records));
      await backend.complete(batch, []);
      expect(await backend.claim(queue, 'c2', 10)).toBeUndefined();
    });

    it('holds a record published with runAt until that time; records without a delay run at once', async () => {
      const { backend } = subject;
      const runAt = new Date(Date.now() + 1_200);
      await backend.publish(queue, [bytes('now-1'), bytes('at'), bytes('now-2')], {
        delays: [undefined, { runAt }, undefined],
      });
      const first = await backend.claim(queue, 'c1', 10);
      expect(first?.records.map((r) => r.payload)).toEqual([bytes('now-1'), bytes('now-2')]);
      expect(await backend.stats(queue)).toMatchObject({ depth: 1, delayed: 1 });
      const { batch, at } = await claimWhenDue();
      expect(at).toBeGreaterThanOrEqual(runAt.getTime());
      expect(batch.records.map((r) => r.payload)).toEqual([bytes('at')]);
    });

    it('counts the attempts of a delayed record that fails from 0, as for any record', async () => {
      const { backend } = subject;
      await backend.publish(queue, [bytes('fails')], { delays: { delayMs: 300 } });
      const { batch } = await claimWhenDue();
      const [record] = batch.records;
      if (!record) throw new Error('no record');
      await backend.complete(batch, [{ record, error: 'boom', retryAt: undefined }]);
      const [failed] = await backend.listErrors(queue, { limit: 10 });
      expect([failed?.payload, failed?.attempts, failed?.error]).toEqual([bytes('fails'), 1, 'boom']);
    });

    it('an idle wait ends when the earliest delayed record is due, not at its timeout', async () => {
      const { backend } = subject;
      await backend.publish(queue, [bytes('soon')], { delays: { delayMs: 1_000 } });
      expect(await backend.claim(queue, 'c1', 10)).toBeUndefined();
      const started = Date.now();
      let claimed: ClaimedBatch | undefined;
      while (!claimed) {
        await backend.waitForRecords(queue, 30_000, new AbortController().signal);
        claimed = await backend.claim(queue, 'c1', 10);
      }
      expect(claimed.records.map((r) => r.payload)).toEqual([bytes('soon')]);
      // Far from the 30 s asked: the wait knew when the record would be due.
      expect(Date.now() - started).toBeLessThan(15_000);
    });

    it('wakes a waiting consumer when records arrive', async () => {
      const { backend } = subject;
      const started = Date.now();
      const waiting = backend.waitForRecords(queue, 5000, new AbortController().signal);
      await backend.publish(queue, [bytes('wake')]);
      await waiting;
      expect(Date.now() - started).toBeLessThan(2000);
    });
  });
}
