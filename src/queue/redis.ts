// Queues kept in Redis lists (`backend = "redis"`), wire-compatible with Azafea: producers LPUSH raw bytes
// to the queue's key and consumers take from the right. A claim moves records into one value per batch
// under its processing key; the acknowledgement is a row of the batch ledger (baton_batch_ledger) written in
// the handler's own transaction, which claim recovery marks (fencing the late acknowledgement of a consumer
// thought dead) before giving back. A key of the wrong type stops the queue's scripts before they write
// (redis-key-problems.ts); the work waits and resumes once the key is fixed.
import { randomUUID } from 'node:crypto';

import type { Redis } from 'ioredis';

import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { RedisConnection } from '../redis/connection.js';
import { callRedis, redisError } from '../redis/connection-errors.js';
import { asArray, asBuffer, asInteger } from '../redis/replies.js';
import { describeKeyProblem } from '../redis/key-types.js';
import type { LuaScript } from '../redis/script.js';
import type { Store, Tx } from '../store/store.js';
import { DEFAULT_QUEUE_SETTINGS, errorQueueName } from './backend.js';
import type {
  ClaimedBatch,
  ClaimedRecord,
  ErrorPage,
  ErrorRecord,
  QueueBackend,
  QueueStats,
  RecordFailure,
  QueueSettings,
} from './backend.js';
import { Heartbeats } from '../util/heartbeats.js';
import type { RateLimiter } from './rate-limit.js';
import { burstWindowMs } from './rate-limit.js';
import { RedisRateLimiter } from './redis-rate.js';
import type { RecordOptions } from './record-options.js';
import { anyDelay, delayAt } from './delay.js';
import { anyValue } from '../util/per-record.js';
import type { Acked } from './batch-ledger.js';
import { BatchLedger, batchPositions } from './batch-ledger.js';
import { openBatch } from './redis-batch.js';
import type { RoledKey } from './redis-key-problems.js';
import { KeyProblems } from './redis-key-problems.js';
import { OrphanBatches } from './redis-orphans.js';
import { CLAIM_KEYED } from './redis-keyed-claim.js';
import {
  COMPLETE_KEYED,
  dedupKeys,
  keyedKeys,
  keyedRoles,
  keyList,
  keySlots,
  lineKeys,
  RECOVER_KEYED,
  RELEASE_KEYED,
  REPLAY_KEYED,
  REVIVE_KEYS,
} from './redis-keyed-scripts.js';
import { claimKeyedKeys, publishRecords, settleKeyedKeys } from './redis-keyed.js';
import { keyRawRecords } from './redis-keying.js';
import {
  batchKeys,
  BATCH_SIZES,
  CLAIM,
  claimKeys,
  COMPLETE,
  consumerKey,
  errorKeys,
  listErrors,
  processingKey,
  PUBLISH_DELAYED,
  queueKeys,
  readPersistence,
  RECOVER,
  RELEASE,
  errorTombstone,
  sortedErrorIds,
  takeErrors,
} from './redis-scripts.js';

export interface RedisQueueOptions {
  /** redis:// or rediss:// URL. */
  readonly url: string;
  /** The sink: acknowledgements are rows of its baton_batch_ledger table (migrations 0003, 0004). */
  readonly store: Store;
  readonly log: Logger;
  /** Queue name → the Redis list its producers LPUSH to. A queue not listed uses its own name. */
  readonly keys?: Readonly<Record<string, string>>;
}

/** A consumer whose key was not refreshed for this long is dead, and its batches are recovered. */
export const CONSUMER_TTL_MS = 3_000;
const HEARTBEAT_MS = 1_000;
const DEFAULT_STARTUP_TIMEOUT_MS = 30_000;
const PUBLISH_CHUNK = 1_000;
/** Blocking connections kept for the next wait; more waiting at once get connections of their own. */
const MAX_IDLE_BLOCKING = 8;
const BLOCKING_GRACE_MS = 2_000;
/** The idle wait when the earliest member of the retry set is due already (it became due since the claim). */
const DUE_WAIT_MS = 50;
/** Ledger rows past their retention are swept at most this often per queue. */
const LEDGER_SWEEP_MS = 60_000;
/** How long a batch of ours that we do not hold waits before it is recovered (a claim may be in flight). */
const UNKNOWN_BATCH_GRACE_MS = 5_000;
const RECOVERED_REASON = 'its node stopped while processing it (the claim was recovered)';
const ORPHAN_REASON =
  'a script failed halfway and left its batch without its claim (the batch was recovered)';
/** A completed batch waits at most about this long for a claim of its consumer to free its processing key. */
const COMPLETED_GRACE_MS = 200;
/** Ordered queues: keys held by a batch that is gone, and broken key lists fixed since, are looked for this often. */
const REVIVE_EVERY_MS = 60_000;

/** Completed batches of one consumer on one queue, whose processing keys are still to be freed. */
interface Completed {
  readonly queue: string;
  readonly consumer: string;
  readonly batches: string[];
  /** When the first of them completed (ms). */
  readonly since: number;
}

export class RedisQueueBackend implements QueueBackend {
  readonly kind = 'redis';
  readonly shared = true;
  readonly #connection: RedisConnection;
  /** The connection's client, for commands. */
  readonly #client: Redis;
  readonly #ledger: BatchLedger;
  readonly #log: Logger;
  readonly #keys: Readonly<Record<string, string>>;
  /** Consumers of this process with their heartbeat timers: alive by definition while registered. */
  readonly #consumers: Heartbeats;
  /** Connections for BLMOVE (a blocked connection serves nobody else). */
  readonly #idle: Redis[] = [];
  readonly #busy = new Set<Redis>();
  readonly #ledgerSweptAt = new Map<string, number>();
  /** Batches this process claimed and has not let go of. */
  readonly #held = new Set<string>();
  /**
   * Batches of this process's consumers that it does not hold: their queue, and when they were first seen.
   * One map for every queue: a queue's recovery pass forgets only the batches of its own queue that are gone.
   */
  readonly #unknownSince = new Map<string, { readonly queue: string; readonly since: number }>();
  /** Completed batches (held until freed) by queue and consumer: see complete(). */
  readonly #completed = new Map<string, Completed>();
  #completionTimer: NodeJS.Timeout | undefined;
  readonly #keyProblems: KeyProblems;
  readonly #orphans: OrphanBatches;
  /** Why the records of a batch whose completion a broken key refused failed, and its queue, for its recovery. */
  readonly #unsettled = new Map<string, { readonly queue: string; readonly reason: string }>();
  #starting: Promise<void> | undefined;
  #closed = false;
  /** The queues' rate limits, kept in `<list>:rate` by Redis's clock. */
  readonly rates: RateLimiter = new RedisRateLimiter(
    (queue) => `${this.#key(queue)}:rate`,
    (queue, script, keys, args) => this.#run(queue, script, keys, args),
  );
  /** What configure() told of each queue. */
  readonly #settings = new Map<string, QueueSettings>();
  /** Ordered queues: raw records waiting to be keyed, as the last claim saw them (absent: not known yet). */
  readonly #toKey = new Map<string, number>();
  /** Ordered queues: when REVIVE_KEYS last ran. */
  readonly #revivedAt = new Map<string, number>();

  constructor(options: RedisQueueOptions) {
    this.#ledger = new BatchLedger(options.store);
    this.#log = options.log;
    this.#consumers = new Heartbeats(HEARTBEAT_MS, 'redis queue', options.log);
    this.#keys = options.keys ?? {};
    this.#connection = new RedisConnection(options.url, {
      // A command in flight when the connection drops fails at once and is never sent again: a claim whose
      // reply was lost must not run a second time. What it did is settled by recovery (see #held).
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      onReconnect: (attempt, delay, err) => {
        const message = `redis: connection to ${this.#connection.url} lost; reconnecting in ${delay} ms (attempt ${attempt})`;
        this.#log.warn({ err, retryInMs: delay }, message);
      },
      onRecovered: () => this.#log.info(`redis: connected to ${this.#connection.url} again`),
    });
    this.#client = this.#connection.client;
    this.#keyProblems = new KeyProblems(this.#client, options.log);
    this.#orphans = new OrphanBatches(this.#client);
  }

  async ready(): Promise<boolean> {
    if (this.#client.status !== 'ready') return false;
    try {
      return (await this.#client.ping()) === 'PONG';
    } catch {
      return false;
    }
  }

  /** The keys of the configured queues that hold the wrong type, one sentence each (empty while unreachable). */
  async problems(): Promise<string[]> {
    if (this.#client.status !== 'ready') return [];
    const found = await Promise.all(
      Object.keys(this.#keys).map(async (queue) => {
        const key = this.#key(queue);
        const keys: RoledKey[] = this.#queueKeys(queue);
        if (this.#ordered(queue)) {
          // Key lists left out of line by a claim because they held another type (a few are enough to tell).
          const broken = await this.#client.zrange(keyedKeys(key).broken, 0, 99).catch(() => []);
          for (const name of broken) keys.push({ key: keyList(key, name), role: 'list' });
        }
        const batches = await this.#client.hgetall(`${key}:batches`).catch(() => ({}));
        for (const [id, consumer] of Object.entries(batches)) {
          keys.push({ key: processingKey(key, consumer, id), role: 'batch' });
        }
        const problems = await this.#keyProblems.check(queue, keys).catch(() => []);
        return problems.map((problem) => `queue "${queue}": ${describeKeyProblem(problem)}`);
      }),
    );
    return found.flat();
  }

  /**
   * Connects (BackendUnavailableError when Redis does not answer within `startupTimeoutMs`) and, with
   * `checkPersistence` (a node starting, not a CLI command), warns once when Redis is not configured for
   * exactly-once across its own crash.
   */
  start(options: { startupTimeoutMs?: number; checkPersistence?: boolean } = {}): Promise<void> {
    return (this.#starting ??= this.#connect(
      options.startupTimeoutMs ?? DEFAULT_STARTUP_TIMEOUT_MS,
      options.checkPersistence ?? true,
    ));
  }

  async #connect(timeoutMs: number, checkPersistence: boolean): Promise<void> {
    await this.#connection.connectWithin(timeoutMs);
    if (!checkPersistence) return;
    const advice = 'exactly-once across a Redis crash needs appendonly yes and appendfsync always';
    const settings = await readPersistence(this.#client);
    if (settings instanceof Error) {
      this.#log.warn({ err: describeError(settings) }, `redis: could not check its persistence: ${advice}`);
      return;
    }
    const { appendonly, appendfsync } = settings;
    if (appendonly !== 'yes' || appendfsync !== 'always') {
      this.#log.warn(
        { appendonly, appendfsync },
        `redis: ${this.#connection.url} runs with appendonly ${appendonly}, appendfsync ${appendfsync}: ${advice}`,
      );
    }
  }

  configure(queue: string, settings: QueueSettings): void {
    this.#settings.set(queue, settings);
  }

  async publish(queue: string, records: readonly Buffer[], options: RecordOptions = {}): Promise<number> {
    if (records.length === 0) return 0;
    const { delays } = options;
    const key = this.#key(queue);
    const settings = this.#settings.get(queue) ?? DEFAULT_QUEUE_SETTINGS;
    const ordered = settings.ordering === 'key';
    if (anyValue(options.ids) || (ordered && (anyValue(options.keys) || anyDelay(delays)))) {
      // Duplicates are dropped, and counted, in the script that stores the others: they count as accepted.
      await publishRecords(this.#keyProblems.runner(queue), key, records, options, settings);
      return records.length;
    }
    if (anyDelay(delays)) {
      // Scored by this node's clock, as claims compare them with the claiming node's (see docs/delayed-records.md).
      const now = Date.now();
      const args: Array<string | Buffer> = [];
      records.forEach((record, index) => {
        const delay = delayAt(delays, index);
        const at =
          delay === undefined ? '' : 'delayMs' in delay ? now + delay.delayMs : delay.runAt.getTime();
        args.push(String(at), record);
      });
      await this.#run(queue, PUBLISH_DELAYED, [key, `${key}:retry`, `${key}:retry:seq`], args);
      return records.length;
    }
    const transaction = this.#client.multi();
    for (let start = 0; start < records.length; start += PUBLISH_CHUNK) {
      transaction.lpush(key, ...records.slice(start, start + PUBLISH_CHUNK));
    }
    if (ordered) {
      // Consumers of an ordered queue wait on its wake list (see waitForRecords).
      const { wake } = keyedKeys(key);
      transaction.lpush(wake, '1').ltrim(wake, 0, 0);
    }
    const replies = await callRedis(() => transaction.exec());
    const failed = replies?.find(([error]) => error)?.[0];
    if (failed) throw await this.#keyProblems.explain(queue, this.#queueKeys(queue), failed);
    return records.length;
  }

  async registerConsumer(consumer: string, node: string): Promise<void> {
    await this.#consumers.add(consumer, () =>
      callRedis(() => this.#client.set(consumerKey(consumer), node, 'PX', CONSUMER_TTL_MS)),
    );
  }

  async unregisterConsumer(consumer: string): Promise<void> {
    await this.#freeCompleted((_, owner) => owner === consumer);
    if (this.#consumers.remove(consumer)) await callRedis(() => this.#client.del(consumerKey(consumer)));
  }

  async claim(queue: string, consumer: string, max: number): Promise<ClaimedBatch | undefined> {
    if (max <= 0) return undefined;
    if (this.#ordered(queue)) return this.#claimKeyed(queue, consumer, max);
    const key = this.#key(queue);
    const id = randomUUID();
    const now = new Date();
    const completed = this.#takeCompleted(queue, consumer);
    const keys = claimKeys(queue, key, processingKey(key, consumer, id));
    for (const batch of completed) keys.push(processingKey(key, consumer, batch));
    const reply = asArray(
      await this.#run(queue, CLAIM, keys, [max, now.getTime(), consumer, id, ...completed]),
    );
    this.#warnGone(queue, completed, reply[0]);
    if (reply.length < 2) return undefined;
    return this.#claimed(queue, consumer, id, now, reply[1]);
  }

  /** A batch as a claim script returned its value. */
  #claimed(queue: string, consumer: string, id: string, now: Date, value: unknown): ClaimedBatch {
    this.#held.add(id);
    const { payloads, attempts, keys } = openBatch(asBuffer(value));
    const records = new Array<ClaimedRecord>(payloads.length);
    for (let index = 0; index < payloads.length; index++) {
      records[index] = new BatchRecord(id, index, payloads[index]!, attempts[index]!, now, keys?.[index]);
    }
    return { id, queue, consumer, records };
  }

  /**
   * An ordered queue: raw records pushed to the list are keyed first (one step, when some wait), then the
   * claim takes due records of the keys in line, and records without a key (see CLAIM_KEYED).
   */
  async #claimKeyed(queue: string, consumer: string, max: number): Promise<ClaimedBatch | undefined> {
    const settings = this.#settings.get(queue) ?? DEFAULT_QUEUE_SETTINGS;
    const { keyOf, keyRateLimit } = settings;
    const key = this.#key(queue);
    const completed = this.#takeCompleted(queue, consumer);
    // Each key's rate is kept by the script, by Redis's clock; records given back are not refunded.
    const rate = keyRateLimit === undefined ? ['', ''] : [keyRateLimit, burstWindowMs(keyRateLimit)];
    let keyed = false;
    for (;;) {
      if (keyOf && !keyed && (this.#toKey.get(queue) ?? 1) > 0) {
        await this.#keyRaw(queue, keyOf, keySlots(settings));
        keyed = true;
      }
      const id = randomUUID();
      const now = new Date();
      const freeing = completed.splice(0);
      const keys = claimKeyedKeys(queue, key, consumer, id, freeing);
      const args = [max, now.getTime(), consumer, id, keyOf ? '0' : '1', keySlots(settings), ...rate];
      args.push(...freeing);
      const reply = asArray(await this.#run(queue, CLAIM_KEYED, keys, args));
      this.#warnGone(queue, freeing, reply[0]);
      const toKey = asInteger(reply[1]);
      this.#toKey.set(queue, toKey);
      if (reply.length >= 3) return this.#claimed(queue, consumer, id, now, reply[2]);
      // Nothing ready, but raw records arrived since the last look: key them and look again, once.
      if (keyed || toKey === 0 || !keyOf) return undefined;
    }
  }

  /** One keying step; a key of the wrong type is logged once (the keyed records are still claimed). */
  async #keyRaw(queue: string, keyOf: NonNullable<QueueSettings['keyOf']>, slots: number): Promise<void> {
    try {
      await keyRawRecords(this.#keyProblems.runner(queue), queue, this.#key(queue), keyOf, slots);
    } catch (error) {
      if (!this.#keyProblems.refused(error)) throw error;
    }
  }

  async acknowledge(tx: Tx, batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<void> {
    await this.#ledger.acknowledge(tx, batch, batchPositions(batch, records));
  }

  /**
   * A batch without failures had every record acknowledged: the consumer's next claim on the queue frees its
   * processing key in the same script (or a timer does, when no claim comes). Failures are settled at once.
   */
  async complete(
    batch: ClaimedBatch,
    failures: readonly RecordFailure[],
  ): Promise<ReadonlyMap<string, string>> {
    if (failures.length === 0) {
      this.#deferCompletion(batch);
      return new Map();
    }
    const key = this.#key(batch.queue);
    const ordered = this.#ordered(batch.queue);
    const args: Array<string | number> = [batch.id, new Date().toISOString()];
    // Keyed: the time that puts the batch's keys in line (or waiting for their head record), and
    // key_concurrency (above 1, a keyed record to retry does not hold its key back).
    if (ordered) args.push(Date.now(), this.#slots(batch.queue));
    for (const { record, error, retryAt } of failures) {
      const retry = retryAt ? retryAt.getTime() : '';
      args.push(record.position, retry, error, record.enqueuedAt.toISOString());
    }
    const keys = ordered
      ? settleKeyedKeys(batch.queue, key, batch)
      : [...batchKeys(key, batch), ...errorKeys(batch.queue)];
    // Settled or not, this process lets go of the batch: if the script did not run, recovery settles the
    // batch by the ledger (what committed stays done, the rest goes back).
    this.#held.delete(batch.id);
    let reply: unknown;
    try {
      reply = await this.#run(batch.queue, ordered ? COMPLETE_KEYED : COMPLETE, keys, args);
    } catch (error) {
      this.#unsettled.set(batch.id, { queue: batch.queue, reason: failureReason(failures) });
      throw error;
    }
    const [settled, ...moved] = asArray(reply);
    if (asInteger(settled) < 0) {
      this.#log.warn(
        { queue: batch.queue, batch: batch.id },
        `queue "${batch.queue}": batch ${batch.id} was recovered before it completed; the recovery counted its failures`,
      );
    }
    const byPosition = new Map(failures.map(({ record }) => [record.position, record.id]));
    const errorIds = new Map<string, string>();
    for (let index = 0; index + 1 < moved.length; index += 2) {
      const record = byPosition.get(asInteger(moved[index]));
      if (record !== undefined) errorIds.set(record, String(asInteger(moved[index + 1])));
    }
    return errorIds;
  }

  #deferCompletion(batch: ClaimedBatch): void {
    const slot = completedSlot(batch.queue, batch.consumer);
    const waiting = this.#completed.get(slot);
    if (waiting) waiting.batches.push(batch.id);
    else {
      this.#completed.set(slot, {
        queue: batch.queue,
        consumer: batch.consumer,
        batches: [batch.id],
        since: Date.now(),
      });
    }
    this.#armCompletionTimer();
  }

  #armCompletionTimer(): void {
    if (this.#closed) return;
    this.#completionTimer ??= setTimeout(() => {
      this.#completionTimer = undefined;
      void this.#freeCompleted((since) => Date.now() - since >= COMPLETED_GRACE_MS);
    }, COMPLETED_GRACE_MS).unref();
  }

  /**
   * Takes the completed batches of `consumer` on `queue` for a script to free. From here this process lets go
   * of them: if the script does not run, recovery frees them (the ledger shows every record acknowledged).
   */
  #takeCompleted(queue: string, consumer: string): string[] {
    const slot = completedSlot(queue, consumer);
    const waiting = this.#completed.get(slot);
    if (!waiting) return [];
    this.#completed.delete(slot);
    for (const batch of waiting.batches) this.#held.delete(batch);
    return waiting.batches;
  }

  /** Frees the processing keys of the completed batches that no claim took and that `due` chooses. */
  async #freeCompleted(due: (since: number, consumer: string) => boolean): Promise<void> {
    const chosen = [...this.#completed.values()].filter((waiting) => due(waiting.since, waiting.consumer));
    await Promise.all(
      chosen.map(async ({ queue, consumer }) => {
        const completed = this.#takeCompleted(queue, consumer);
        if (completed.length === 0) return;
        const key = this.#key(queue);
        try {
          const reply = asArray(await this.#freeBatches(queue, key, consumer, completed));
          this.#warnGone(queue, completed, reply[0]);
        } catch (error) {
          this.#log.warn(
            { queue, err: describeError(error) },
            `queue "${queue}": could not free ${completed.length} completed batches; claim recovery will`,
          );
        }
      }),
    );
    if (this.#completed.size > 0) this.#armCompletionTimer();
  }

  /** CLAIM (CLAIM_KEYED for an ordered queue) with max 0: frees completed batches, and their keys. */
  #freeBatches(queue: string, key: string, consumer: string, completed: readonly string[]): Promise<unknown> {
    if (this.#ordered(queue)) {
      const keys = claimKeyedKeys(queue, key, consumer, 'none', completed);
      const args = [0, Date.now(), consumer, 'none', '0', this.#slots(queue), '', '', ...completed];
      return this.#run(queue, CLAIM_KEYED, keys, args);
    }
    const keys = claimKeys(queue, key, processingKey(key, consumer, 'none'));
    for (const batch of completed) keys.push(processingKey(key, consumer, batch));
    return this.#run(queue, CLAIM, keys, [0, 0, consumer, 'none', ...completed]);
  }

  #warnGone(queue: string, completed: readonly string[], gone: unknown): void {
    if (completed.length === 0 || asInteger(gone) === 0) return;
    this.#log.warn(
      { queue, batches: completed },
      `queue "${queue}": ${asInteger(gone)} completed batches were recovered before their processing keys were freed`,
    );
  }

  async release(batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<void> {
    const ordered = this.#ordered(batch.queue);
    // An ordered queue's runner gives back the records held back behind a failure, then completes the
    // batch: this process still holds it meanwhile.
    if (!ordered || records.length >= batch.records.length) this.#held.delete(batch.id);
    if (records.length === 0) return;
    try {
      // Records acknowledged by a committed part of the batch (the runner may commit it in halves) stay done.
      const acked = await this.#ledger.acked(batch.id);
      const indexes = [...new Set(records.map((record) => record.position))].sort((a, b) => a - b);
      const key = this.#key(batch.queue);
      const [processing, batches, retry, retrySeq] = batchKeys(key, batch);
      const keys = [processing, batches, key, retry, retrySeq];
      if (ordered) keys.push(keyedKeys(key).free, ...lineKeys(key));
      await this.#run(batch.queue, ordered ? RELEASE_KEYED : RELEASE, keys, [
        batch.id,
        Date.now(),
        ...ackedArgs(acked),
        indexes.length,
        ...indexes,
      ]);
    } catch (error) {
      // A runner whose give-back failed does not complete the batch: this process lets go of it, and recovery
      // settles it by the ledger (what committed stays done, the rest goes back to the head of its keys).
      this.#held.delete(batch.id);
      throw error;
    }
  }

  async recoverClaims(queue: string, options: { maxAttempts: number }): Promise<number> {
    const key = this.#key(queue);
    if (this.#keyProblems.has(queue)) {
      await this.#keyProblems.check(queue, this.#queueKeys(queue));
      // A key of the queue itself: every batch would be refused. Logged once; tried again on the next pass.
      if (this.#keyProblems.has(queue, { shared: true })) return 0;
      if (!this.#keyProblems.has(queue)) this.#orphans.searchAgain(queue);
    }
    // Processing keys are listed before the batches hash is read: one listed and not in the hash read after
    // it has lost its batch for good (a script claims, and frees, both at once).
    const scanned = await this.#orphans.scan(queue, key);
    let batches: Record<string, string>;
    try {
      batches = await this.#client.hgetall(`${key}:batches`);
    } catch (error) {
      const explained = await this.#keyProblems.explain(queue, this.#queueKeys(queue), error);
      if (this.#keyProblems.refused(explained)) return 0;
      throw explained;
    }
    if (this.#ordered(queue)) await this.#reviveKeys(queue, key);
    const orphans = this.#orphans.collect(queue, scanned, batches);
    forgetGone(this.#unsettled, queue, batches);
    await this.#sweepLedger(queue, [...Object.keys(batches), ...orphans.keys()]);
    const consumers = [...new Set(Object.values(batches))].filter((c) => !this.#consumers.has(c));
    const seen =
      consumers.length === 0 ? [] : await callRedis(() => this.#client.mget(consumers.map(consumerKey)));
    const dead = new Set(consumers.filter((_, index) => (seen[index] ?? null) === null));
    const claimed = Object.entries(batches).filter(
      ([id, consumer]) => dead.has(consumer) || this.#unknownOwnBatch(queue, id, consumer),
    );
    forgetGone(this.#unknownSince, queue, batches);
    const settle = [
      ...claimed.map(([id, consumer]) => ({ id, consumer, mode: 'claimed' })),
      ...[...orphans].map(([id, consumer]) => ({ id, consumer, mode: 'orphan' })),
    ];
    if (settle.length === 0) return 0;
    // Fence first: once this commits, the dead consumer's acknowledgement of these batches fails.
    const acked = await this.#ledger.fence(
      queue,
      settle.map(({ id }) => id),
    );
    const now = new Date();
    const ordered = this.#ordered(queue);
    let recovered = 0;
    for (const { id, consumer, mode } of settle) {
      const keys = ordered
        ? settleKeyedKeys(queue, key, { id, consumer })
        : [...batchKeys(key, { id, consumer }), ...errorKeys(queue)];
      const reason =
        mode === 'orphan' ? ORPHAN_REASON : (this.#unsettled.get(id)?.reason ?? RECOVERED_REASON);
      const args = [id, now.getTime(), options.maxAttempts, now.toISOString(), reason, mode];
      try {
        recovered += asInteger(
          await this.#run(queue, ordered ? RECOVER_KEYED : RECOVER, keys, [
            ...args,
            ...ackedArgs(acked.get(id) ?? []),
          ]),
        );
      } catch (error) {
        if (this.#keyProblems.refused(error)) continue; // logged once; the batch waits for the next pass
        throw error;
      }
      orphans.delete(id);
      this.#unsettled.delete(id);
    }
    return recovered;
  }

  /**
   * Ordered queues, at most every REVIVE_EVERY_MS: lets go of keys held by batches that are gone, and puts
   * back in line the keys whose list was of the wrong type and is fixed.
   */
  async #reviveKeys(queue: string, key: string): Promise<void> {
    if (Date.now() - (this.#revivedAt.get(queue) ?? 0) < REVIVE_EVERY_MS) return;
    this.#revivedAt.set(queue, Date.now());
    const { broken } = keyedKeys(key);
    try {
      await this.#run(queue, REVIVE_KEYS, [`${key}:batches`, broken, ...lineKeys(key)], [Date.now()]);
    } catch (error) {
      if (!this.#keyProblems.refused(error)) throw error;
    }
  }

  /**
   * A batch of one of this process's consumers that it does not hold: its claim's reply was lost with the
   * connection, or its completion failed. After a grace period (a claim may still be on its way back) it
   * is recovered like a dead consumer's.
   */
  #unknownOwnBatch(queue: string, id: string, consumer: string): boolean {
    if (!this.#consumers.has(consumer) || this.#held.has(id)) return false;
    const seen = this.#unknownSince.get(id);
    if (seen === undefined) {
      this.#unknownSince.set(id, { queue, since: Date.now() });
      return false;
    }
    return Date.now() - seen.since >= UNKNOWN_BATCH_GRACE_MS;
  }

  /**
   * Waits until the list has a record, the earliest member of the retry set is due (a delayed record, or one
   * waiting out a back-off; by this node's clock), or `timeoutMs`, whichever comes first. An ordered queue
   * waits on its wake list instead (a key put in line, a record without a key stored; a claim that finds
   * nothing empties it), and for its earliest waiting key: records LPUSHed raw by producers are seen at the
   * next look, within `timeoutMs`.
   */
  async waitForRecords(queue: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted || timeoutMs <= 0 || this.#closed) return;
    const waitMs = await this.#untilDue(queue, timeoutMs);
    if (signal.aborted || this.#closed) return;
    const connection = await this.#blockingConnection();
    const abort = (): void => connection.disconnect();
    signal.addEventListener('abort', abort, { once: true });
    // A connection that died without a word (half-open TCP) would block past the server's timeout.
    const deadline = setTimeout(abort, waitMs + BLOCKING_GRACE_MS);
    let reusable = false;
    try {
      if (signal.aborted) return;
      const key = this.#ordered(queue) ? keyedKeys(this.#key(queue)).wake : this.#key(queue);
      // Pops from and pushes to the same end: returns once the list has a record, and leaves it there.
      await connection.blmoveBuffer(key, key, 'RIGHT', 'RIGHT', (waitMs / 1000).toFixed(3));
      reusable = true;
    } catch (error) {
      if (!signal.aborted && !this.#closed)
        throw await this.#keyProblems.explain(queue, this.#queueKeys(queue), error);
    } finally {
      clearTimeout(deadline);
      signal.removeEventListener('abort', abort);
      this.#busy.delete(connection);
      const keep = reusable && !signal.aborted && !this.#closed && connection.status === 'ready';
      if (keep && this.#idle.length < MAX_IDLE_BLOCKING) this.#idle.push(connection);
      else connection.disconnect();
    }
  }

  /**
   * Milliseconds until the earliest member of the queue's retry set is due, at most `maxMs` (O(1): the head
   * of the sorted set). One due already (it became due since the claim looked) gives DUE_WAIT_MS; at least
   * 1 ms, since a blocking wait of 0 would never end.
   */
  async #untilDue(queue: string, maxMs: number): Promise<number> {
    try {
      const key = this.#key(queue);
      const keyed = keyedKeys(key);
      const sets = this.#ordered(queue) ? [`${key}:retry`, keyed.waiting, keyed.retry] : [`${key}:retry`];
      const heads = await Promise.all(sets.map((set) => this.#client.zrange(set, 0, 0, 'WITHSCORES')));
      const scores = heads.flatMap(([, score]) => (score === undefined ? [] : [Number(score)]));
      if (scores.length === 0) return maxMs;
      const ms = Math.ceil(Math.min(...scores) - Date.now());
      return Math.max(1, Math.min(maxMs, ms > 0 ? ms : DUE_WAIT_MS));
    } catch {
      // The claim that follows reports what is wrong with Redis or the key.
      return maxMs;
    }
  }

  async #blockingConnection(): Promise<Redis> {
    const idle = this.#idle.pop();
    const connection = idle ?? this.#client.duplicate({ lazyConnect: true, retryStrategy: () => null });
    this.#busy.add(connection);
    if (idle) return connection;
    connection.on('error', () => undefined); // surfaces through the waiting command
    try {
      await connection.connect();
      return connection;
    } catch (error) {
      this.#busy.delete(connection);
      connection.disconnect();
      throw redisError(error);
    }
  }

  async stats(queue: string): Promise<QueueStats> {
    const key = this.#key(queue);
    const [[waiting, retrying, delayed, errors, deduplicated, batches], keyed] = await Promise.all([
      Promise.all([
        this.#client.llen(key),
        this.#client.zcard(`${key}:retry`),
        // Not due yet by this node's clock: O(log n) in the ZSET, whatever its size.
        this.#client.zcount(`${key}:retry`, `(${Date.now()}`, '+inf'),
        this.#client.llen(errorQueueName(queue)),
        this.#client.get(dedupKeys(key).counter),
        this.#client.hgetall(`${key}:batches`),
      ]),
      this.#ordered(queue) ? this.#keyedStats(key) : { depth: 0, delayed: 0 },
    ]).catch(async (error: unknown) => {
      throw await this.#keyProblems.explain(queue, this.#queueKeys(queue), error);
    });
    const claims = Object.entries(batches);
    const keys = claims.map(([id, consumer]) => processingKey(key, consumer, id));
    const held =
      keys.length === 0 ? [] : asArray(await this.#run(queue, BATCH_SIZES, keys, [])).map(asInteger);
    // Acknowledged records wait in their batch until it completes; they are done.
    const sizes = new Map(claims.map(([id], index) => [id, held[index] ?? 0]));
    const acked = await this.#ledger.committedCount(sizes);
    const inFlight = Math.max(0, held.reduce((sum, length) => sum + length, 0) - acked);
    return {
      depth: waiting + retrying + keyed.depth,
      delayed: delayed + keyed.delayed,
      inFlight,
      errors,
      // Only queues that were given ids have the counter.
      ...(deduplicated === null ? {} : { deduplicated: Number(deduplicated) }),
    };
  }

  /**
   * What an ordered queue holds beside its list and retry set: the records of its keys and its keyed retries
   * (a counter the scripts keep), those without a key and those being keyed. Delayed: the keys waiting for a
   * head record not due yet or for their rate (a delayed record behind another of its key is counted once
   * it is the head), and the keyed retries not due yet.
   */
  async #keyedStats(key: string): Promise<{ depth: number; delayed: number }> {
    const keyed = keyedKeys(key);
    const [inKeys, free, staged, waiting, retrying] = await Promise.all([
      this.#client.get(keyed.depth),
      this.#client.llen(keyed.free),
      this.#client.llen(keyed.staging),
      this.#client.zcount(keyed.waiting, `(${Date.now()}`, '+inf'),
      this.#client.zcount(keyed.retry, `(${Date.now()}`, '+inf'),
    ]);
    return { depth: Number(inKeys ?? 0) + free + staged, delayed: waiting + retrying };
  }

  listErrors(queue: string, options: ErrorPage): Promise<ErrorRecord[]> {
    return listErrors(this.#keyProblems.runner(queue), queue, options);
  }

  async replayErrors(queue: string, options: { ids?: readonly string[]; limit: number }): Promise<number> {
    if (this.#ordered(queue)) {
      // Records of a key go back to its tail, the others to the list (to be keyed again).
      const key = this.#key(queue);
      const ids = sortedErrorIds(options.ids);
      if (ids?.length === 0 || options.limit <= 0) return 0;
      const keys = [...errorKeys(queue), key, ...lineKeys(key)];
      const now = new Date();
      const args = [now.toISOString(), now.getTime(), options.limit, errorTombstone(), this.#slots(queue)];
      args.push(...(ids ?? []));
      return asInteger(await this.#run(queue, REPLAY_KEYED, keys, args));
    }
    return takeErrors(this.#keyProblems.runner(queue), queue, {
      into: this.#key(queue),
      ids: options.ids,
      limit: options.limit,
    });
  }

  dropErrors(queue: string, ids: readonly string[]): Promise<number> {
    return takeErrors(this.#keyProblems.runner(queue), queue, { into: undefined, ids, limit: ids.length });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    clearTimeout(this.#completionTimer);
    await this.#freeCompleted(() => true);
    await Promise.all(
      this.#consumers.ids().map((consumer) =>
        this.unregisterConsumer(consumer).catch((error: unknown) => {
          this.#log.warn({ err: describeError(error), consumer }, 'redis queue: could not unregister');
        }),
      ),
    );
    this.#closed = true;
    for (const connection of [...this.#idle, ...this.#busy]) connection.disconnect();
    this.#idle.length = 0;
    this.#busy.clear();
    await this.#connection.close();
  }

  /** Runs a script over the keys of `queue`: a key of the wrong type is logged once and thrown as the typed error. */
  #run(
    queue: string,
    script: LuaScript,
    keys: readonly string[],
    args: ReadonlyArray<string | Buffer | number>,
  ): Promise<unknown> {
    return this.#keyProblems.runner(queue)(script, keys, args);
  }

  #ordered(queue: string): boolean {
    return this.#settings.get(queue)?.ordering === 'key';
  }

  /** key_concurrency of `queue`, as the keyed scripts take it. */
  #slots(queue: string): number {
    return keySlots(this.#settings.get(queue) ?? DEFAULT_QUEUE_SETTINGS);
  }

  /** The keys of `queue` with their roles: queueKeys(), and those of an ordered queue. */
  #queueKeys(queue: string): RoledKey[] {
    const key = this.#key(queue);
    const keys: RoledKey[] = queueKeys(queue, key);
    if (this.#ordered(queue)) keys.push(...keyedRoles(key));
    return keys;
  }

  /** The list producers push to: the configured key, else the queue's name. */
  #key(queue: string): string {
    return this.#keys[queue] ?? queue;
  }

  async #sweepLedger(queue: string, live: readonly string[]): Promise<void> {
    if (Date.now() - (this.#ledgerSweptAt.get(queue) ?? 0) < LEDGER_SWEEP_MS) return;
    this.#ledgerSweptAt.set(queue, Date.now());
    // Rows of batches still held are kept whatever their age: they fence a consumer that may still commit.
    await this.#ledger.sweep(queue, live);
  }
}

/** The reason the recovery of a batch whose completion was refused gives its failed records. */
function failureReason(failures: readonly RecordFailure[]): string {
  const reasons = [...new Set(failures.map((failure) => failure.error))];
  return reasons.length === 1
    ? reasons[0]!
    : `${reasons.length} different failures; the first: ${reasons[0]}`;
}

/** The acknowledged positions as RELEASE and RECOVER take them: '1' for the whole batch, else '0' and a count. */
function ackedArgs(acked: Acked): Array<string | number> {
  return acked === 'all' ? ['1', 0] : ['0', acked.length, ...acked];
}

/** A record of a Redis batch. Its id, `<batch>:<position>`, is made only when asked for (logs, errors). */
class BatchRecord implements ClaimedRecord {
  readonly #batch: string;

  constructor(
    batch: string,
    readonly position: number,
    readonly payload: Buffer,
    readonly attempts: number,
    readonly enqueuedAt: Date,
    readonly key?: string,
  ) {
    this.#batch = batch;
  }

  get id(): string {
    return `${this.#batch}:${this.position}`;
  }
}

/** Drops the entries of `queue` whose batch is not in its batches hash any more (other queues' stay). */
function forgetGone(
  entries: Map<string, { readonly queue: string }>,
  queue: string,
  batches: Readonly<Record<string, string>>,
): void {
  for (const [id, entry] of entries) if (entry.queue === queue && !(id in batches)) entries.delete(id);
}

function completedSlot(queue: string, consumer: string): string {
  return `${queue}\u0000${consumer}`;
}
