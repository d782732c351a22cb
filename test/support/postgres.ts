// A throwaway database on the machine's PostgreSQL server for one test file (never the server's own
// databases), dropped afterwards. An unreachable server fails the test: nothing is skipped.
import { randomBytes } from 'node:crypto';

import pg from 'pg';

/** The server tests use; BATON_TEST_PG_URL overrides it. */
export const SERVER_URL = process.env['BATON_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  readonly url: string;
  readonly name: string;
  drop(): Promise<void>;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `baton_t_${randomBytes(6).toString('hex')}`;
  await admin(`CREATE DATABASE ${name}`);
  const url = new URL(SERVER_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

const tracked: TestDatabase[] = [];

/**
 * The `[store]` table of a test project's config: none on the embedded store; on 'postgres', a fresh
 * database, dropped by dropTrackedDatabases() (an afterEach).
 */
export async function storeToml(store: 'embedded' | 'postgres'): Promise<string> {
  if (store === 'embedded') return '';
  const database = await createTestDatabase();
  tracked.push(database);
  return `[store]\nurl = "${database.url}"\npool_size = 2\n`;
}

/** Drops the databases made by storeToml() so far. */
export async function dropTrackedDatabases(): Promise<void> {
  await Promise.all(tracked.splice(0).map((database) => database.drop()));
}

async function admin(statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: SERVER_URL, connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
  } catch (error) {
    throw new Error(
      `PostgreSQL is not reachable at ${SERVER_URL}: integration tests need it (bash scripts/ensure-services.sh starts it)`,
      { cause: error },
    );
  }
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

/** Rows and distinct ids in the `seen` table of the ids handlers; -1 while the server does not answer. */
export async function countSeen(url: string): Promise<{ rows: number; distinct: number }> {
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    const exists = await client.query<{ t: string | null }>("SELECT to_regclass('seen')::text AS t");
    if (!exists.rows[0]?.t) return { rows: 0, distinct: 0 };
    const result = await client.query<{ rows: string; distinct: string }>(
      'SELECT count(*) AS rows, count(DISTINCT id) AS "distinct" FROM seen',
    );
    return { rows: Number(result.rows[0]?.rows), distinct: Number(result.rows[0]?.distinct) };
  } catch {
    return { rows: -1, distinct: -1 }; // the server is restarting
  } finally {
    await client.end().catch(() => undefined);
  }
}
