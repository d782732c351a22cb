// The queue backend contract against Redis lists, with a throwaway PostgreSQL database as the sink (its
// baton_batch_ledger holds the acknowledgements). The suite picks its own queue names: the backend's `keys`
// map is empty, so each queue's list is the queue's name, and the keys of every queue used are deleted after.
import type { ClaimedBatch } from '../../src/queue/backend.js';
import type { RecordOptions } from '../../src/queue/record-options.js';
import { RedisQueueBackend } from '../../src/queue/redis.js';
import { createLogger } from '../../src/log.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import { describeQueueBackend } from '../contract/queue-backend.contract.js';
import { createTestDatabase } from '../support/postgres.js';
import type { TestRedis } from '../support/redis.js';
import { openTestRedis } from '../support/redis.js';

/** Remembers the queues the suite touches, so that their keys can be deleted afterwards. */
class TrackedRedisQueueBackend extends RedisQueueBackend {
  constructor(
    options: ConstructorParameters<typeof RedisQueueBackend>[0],
    private readonly redis: TestRedis,
  ) {
    super(options);
  }

  override publish(queue: string, records: readonly Buffer[], options?: RecordOptions): Promise<number> {
    this.redis.track(queue);
    return super.publish(queue, records, options);
  }

  override claim(queue: string, consumer: string, max: number): Promise<ClaimedBatch | undefined> {
    this.redis.track(queue);
    return super.claim(queue, consumer, max);
  }
}

describeQueueBackend('redis queue', async () => {
  const redis = await openTestRedis();
  const database = await createTestDatabase();
  const log = createLogger({ level: 'silent' });
  const store = await openPostgresStore(
    { kind: 'postgres', url: database.url, poolSize: 8, statementTimeoutMs: 0 },
    { log, startupTimeoutMs: 5000 },
  );
  await applyMigrations(store, await builtinMigrations());
  const backend = new TrackedRedisQueueBackend({ url: redis.url, store, log }, redis);
  await backend.start();
  return {
    backend,
    store,
    async dispose() {
      await backend.close();
      await redis.cleanup();
      await store.close();
      await database.drop();
    },
  };
});
