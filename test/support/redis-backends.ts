// Several Redis queue backends on one Redis, as several nodes would hold them, over one PostgreSQL store with
// Baton's migrations (where the backends keep their ledgers): for tests of Redis queues shared by consumers.
import { sql } from 'drizzle-orm';

import { createLogger } from '../../src/log.js';
import type { ClaimedBatch, ClaimedRecord } from '../../src/queue/backend.js';
import { RedisQueueBackend } from '../../src/queue/redis.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/store.js';
import { executeIn } from '../../src/store/store.js';
import type { TestDatabase } from './postgres.js';
import { createTestDatabase } from './postgres.js';
import type { TestRedis } from './redis.js';
import { openTestRedis } from './redis.js';

export interface RedisBackends {
  readonly redis: TestRedis;
  readonly store: Store;
  readonly backends: readonly RedisQueueBackend[];
  /** The handler's transaction on the store: acknowledges `records` of `batch` through `on`. */
  commit(on: RedisQueueBackend, batch: ClaimedBatch, records: readonly ClaimedRecord[]): Promise<void>;
  close(): Promise<void>;
}

/** `count` started backends; `keys` names each queue's list where it is not the queue's name. */
export async function openRedisBackends(
  count: number,
  keys: (redis: TestRedis) => Record<string, string> = () => ({}),
): Promise<RedisBackends> {
  const redis = await openTestRedis();
  let database: TestDatabase | undefined;
  let store: Store | undefined;
  const backends: RedisQueueBackend[] = [];
  const close = async (): Promise<void> => {
    for (const backend of backends) await backend.close();
    await redis.cleanup();
    await store?.close();
    await database?.drop();
  };
  try {
    database = await createTestDatabase();
    const log = createLogger({ level: 'silent' });
    store = await openPostgresStore(
      { kind: 'postgres', url: database.url, poolSize: 8, statementTimeoutMs: 0 },
      { log, startupTimeoutMs: 5000 },
    );
    await applyMigrations(store, await builtinMigrations());
    const lists = keys(redis);
    for (let index = 0; index < count; index++) {
      const backend = new RedisQueueBackend({ url: redis.url, store, log, keys: lists });
      await backend.start({ checkPersistence: false });
      backends.push(backend);
    }
    const opened = store;
    const commit = (on: RedisQueueBackend, batch: ClaimedBatch, records: readonly ClaimedRecord[]) =>
      opened.transaction(async (tx) => {
        await executeIn(tx, sql`SELECT 1`);
        await on.acknowledge(tx, batch, records);
      });
    return { redis, store, backends, commit, close };
  } catch (error) {
    await close();
    throw error;
  }
}
