// Nodes started in the test process on one fresh PostgreSQL database and one Redis, with a client on that
// database to read what the handlers wrote: for tests of limits shared by every node of a group.
import pg from 'pg';

import type { BatonNode, ConfigInput } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import type { TestDatabase } from './postgres.js';
import { createTestDatabase } from './postgres.js';
import type { TestRedis } from './redis.js';
import { openTestRedis } from './redis.js';

export interface NodeGroup {
  readonly nodes: readonly BatonNode[];
  readonly client: pg.Client;
  /** Milliseconds since the epoch by the database's clock, which every node's handler writes with. */
  databaseNow(): Promise<number>;
  close(): Promise<void>;
}

/**
 * Starts one node per name, each with `queues` (given a Redis list name of the test's own, for every Redis
 * queue: call `list()` once per queue, the same on every node).
 */
export async function startNodeGroup(
  names: readonly string[],
  queues: (list: () => string) => NonNullable<ConfigInput['queues']>,
): Promise<NodeGroup> {
  const database: TestDatabase = await createTestDatabase();
  const redis: TestRedis = await openTestRedis();
  const nodes: BatonNode[] = [];
  let client: pg.Client | undefined;
  const close = async (): Promise<void> => {
    await client?.end();
    await Promise.all(nodes.map((node) => node.stop()));
    await redis.cleanup();
    await database.drop();
  };
  try {
    const lists: string[] = [];
    let next = 0;
    const list = (): string => (lists[next++] ??= redis.queue());
    for (const name of names) {
      next = 0;
      nodes.push(
        await startNode(
          {
            node: { name, shutdown_timeout_ms: 3000 },
            http: { enabled: false },
            store: { url: database.url },
            redis: { url: redis.url },
            queues: queues(list),
          },
          { log: createLogger({ level: 'silent' }) },
        ),
      );
    }
    client = new pg.Client({ connectionString: database.url });
    await client.connect();
  } catch (error) {
    await close();
    throw error;
  }
  const connected = client;
  return {
    nodes,
    client: connected,
    async databaseNow() {
      const { rows } = await connected.query<{ ms: number }>(
        'SELECT extract(epoch FROM clock_timestamp()) * 1000 AS ms',
      );
      return Number(rows[0]?.ms);
    },
    close,
  };
}
