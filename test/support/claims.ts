// The services a test of node processes shares with them (a fresh PostgreSQL database, the machine's Redis
// under a prefix of the test's own, a pool to read the sink), and the claims a node process holds in them.
import pg from 'pg';

import { freePort } from './process.js';
import type { TestDatabase } from './postgres.js';
import { createTestDatabase } from './postgres.js';
import type { TestRedis } from './redis.js';
import { openTestRedis } from './redis.js';

export interface SharedServices {
  readonly database: TestDatabase;
  readonly redis: TestRedis;
  readonly pool: pg.Pool;
  /** The `n` column of the first row of `statement`. */
  readonly count: (statement: string, params?: unknown[]) => Promise<number>;
  close(): Promise<void>;
}

export async function openSharedServices(): Promise<SharedServices> {
  const database = await createTestDatabase();
  const redis = await openTestRedis().catch(async (error: unknown) => {
    await database.drop();
    throw error;
  });
  const pool = new pg.Pool({ connectionString: database.url, max: 3 });
  pool.on('error', () => undefined);
  return {
    database,
    redis,
    pool,
    count: async (statement, params = []) =>
      Number((await pool.query<{ n: number }>(statement, params)).rows[0]?.n ?? -1),
    async close() {
      await pool.end();
      await redis.cleanup();
      await database.drop();
    },
  };
}

/**
 * The [node], [log], [http], [store] and [redis] tables of a node process named `name` on these services,
 * its HTTP API on a free port.
 */
export async function nodeToml(services: SharedServices, name: string): Promise<string> {
  return (
    `[node]\nname = "${name}"\ndata_dir = "data"\nshutdown_timeout_ms = 3000\n[log]\nlevel = "warn"\n` +
    `[http]\nport = ${await freePort()}\n[store]\nurl = "${services.database.url}"\npool_size = 6\n` +
    `[redis]\nurl = "${services.redis.url}"\n`
  );
}

/**
 * The claims of the consumers whose names start with `consumer` (a node process's `<name>:<pid>:`): store
 * records claimed, and batches of the Redis queue whose list is `redisList`.
 */
export async function claimsHeld(
  services: SharedServices,
  consumer: string,
  redisList: string,
): Promise<{ store: number; redis: number }> {
  const store = await services.count(
    `SELECT count(*)::int AS n FROM baton.baton_queue_records WHERE claimed_by LIKE $1 || '%'`,
    [consumer],
  );
  const owners = await services.redis.client.hvals(`${redisList}:batches`);
  return { store, redis: owners.filter((owner) => owner.startsWith(consumer)).length };
}
