// The machine's Redis for one test file: queue names under a prefix of its own, a client for producing and
// inspecting keys directly, and a cleanup that deletes every key of those queues. An unreachable Redis fails
// the test: nothing is skipped.
import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';

/** The server tests use; BATON_TEST_REDIS_URL overrides it. */
export const REDIS_URL = process.env['BATON_TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

export interface TestRedis {
  readonly url: string;
  /** Starts every queue name (and so every key, `errors-<queue>` and consumer name) of this file. */
  readonly prefix: string;
  /** A client of its own, to play a producer or look at keys. */
  readonly client: Redis;
  /** A fresh queue name under the prefix. */
  queue(): string;
  /** Queues named outside the prefix (e.g. by a shared suite) whose keys cleanup must delete too. */
  track(queue: string): void;
  /** Deletes every key of the file's queues and quits the client. */
  cleanup(): Promise<void>;
}

export async function openTestRedis(): Promise<TestRedis> {
  const client = new Redis(REDIS_URL, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined); // surfaces through connect() below
  try {
    await client.connect();
  } catch (error) {
    client.disconnect();
    throw new Error(
      `Redis is not reachable at ${REDIS_URL}: integration tests need it (bash scripts/ensure-services.sh starts it)`,
      { cause: error },
    );
  }
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const tracked = new Set<string>();
  let count = 0;
  return {
    url: REDIS_URL,
    prefix,
    client,
    queue: () => `${prefix}-q${++count}`,
    track: (queue) => tracked.add(queue),
    async cleanup(): Promise<void> {
      const patterns = [prefix, ...tracked].flatMap((name) => [
        `${name}*`,
        `errors-${name}*`,
        `baton:consumer:${name}*`,
      ]);
      for (const pattern of patterns) await deleteMatching(client, pattern);
      await client.quit();
    },
  };
}

async function deleteMatching(client: Redis, pattern: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(
      cursor,
      'MATCH',
      escapeGlob(pattern.slice(0, -1)) + '*',
      'COUNT',
      500,
    );
    if (keys.length > 0) await client.del(...keys);
    cursor = next;
  } while (cursor !== '0');
}

/** Queue names are plain text, but a pattern must not let `[`, `?` or `*` in a name match other keys. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}
