// An EventClient given the URLs of three node processes (one group, one PostgreSQL database) keeps sending
// while two of the nodes are killed in turn with kill -9: every send succeeds, and every event it sent is
// stored exactly once (by its value and by its producer id and sequence number), read from the log by SQL.
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';

import { EventClient } from '../../src/index.js';
import type { ClientLogger } from '../../src/events/client.js';
import { waitFor } from '../support/group.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import { cleanupAll, freePort, startBatonNode, tempProject } from '../support/process.js';

const NAMESPACE = 'nodes';
const WORKERS = 4;

let database: TestDatabase | undefined;
let client: EventClient | undefined;
afterEach(async () => {
  await client?.close();
  client = undefined;
  await cleanupAll();
  await database?.drop();
  database = undefined;
});

/** Counts the client's warnings (each node it moved on from) instead of printing them. */
class CountingLog implements ClientLogger {
  readonly moves: string[] = [];

  info(): void {}

  warn(object: object, message: string): void {
    if (message.includes('moving on')) this.moves.push(`${message} ${JSON.stringify(object)}`);
  }
}

describe('an event client given three node processes', () => {
  it('keeps sending while two of them are killed in turn; every event is stored once', async () => {
    const db = await createTestDatabase();
    database = db;
    const nodes = [];
    for (const name of ['n1', 'n2', 'n3']) {
      const project = await tempProject({
        toml:
          `[node]\nname = "${name}"\ndata_dir = "data"\nshutdown_timeout_ms = 3000\n[log]\nlevel = "warn"\n` +
          `[http]\nport = ${await freePort()}\n[store]\nurl = "${db.url}"\npool_size = 3\n` +
          `[group]\nname = "g"\nelector = "postgres"\nlease_ms = 2000\nrenew_deadline_ms = 1200\nheartbeat_ms = 200\n`,
      });
      nodes.push(project.configPath);
    }
    const [n1, n2, n3] = await Promise.all(nodes.map((config) => startBatonNode(config)));
    if (!n1 || !n2 || !n3) throw new Error('three nodes expected');

    const log = new CountingLog();
    const sender = new EventClient(`${n1.url}, ${n2.url}, ${n3.url}`, {
      namespace: NAMESPACE,
      sender: 'nodes-test',
      log,
      env: {},
      sendTimeoutMs: 60_000,
    });
    client = sender;

    // Workers send one event at a time each, so that several requests are in flight when a node dies.
    const acked = new Map<string, number>();
    const failures: unknown[] = [];
    let duplicates = 0;
    let stop = false;
    const workers = Array.from({ length: WORKERS }, async (_, worker) => {
      for (let index = 0; !stop; index++) {
        const value = `w${worker}-${index}`;
        try {
          const event = await sender.sendEvent('tick', value);
          acked.set(value, event.offset);
          if (event.duplicate) duplicates++;
        } catch (error) {
          failures.push(error);
          return;
        }
      }
    });
    const ackedAtLeast = (count: number, what: string) =>
      waitFor(
        () => Promise.resolve(acked.size >= count || failures.length > 0 ? true : undefined),
        60_000,
        what,
      );

    try {
      await ackedAtLeast(100, '100 events sent to the first node');
      await n1.stop('SIGKILL');
      const afterFirst = acked.size;
      await ackedAtLeast(afterFirst + 100, '100 more events after the first kill');
      await n2.stop('SIGKILL');
      const afterSecond = acked.size;
      await ackedAtLeast(afterSecond + 100, '100 more events after the second kill');
    } finally {
      stop = true;
      await Promise.all(workers);
    }
    expect(failures).toEqual([]);
    // It moved on from each killed node, to the next one in the list.
    expect(log.moves.some((line) => line.includes(`node ${n1.url} failed; moving on to ${n2.url}`))).toBe(
      true,
    );
    expect(log.moves.some((line) => line.includes(`node ${n2.url} failed; moving on to ${n3.url}`))).toBe(
      true,
    );

    const rows = await storedEvents(db.url);
    const byValue = new Map<string, number>();
    for (const row of rows) byValue.set(row.value, (byValue.get(row.value) ?? 0) + 1);
    const twice = [...byValue].filter(([, count]) => count > 1);
    expect(twice).toEqual([]);
    expect(new Set(rows.map((row) => `${row.client_id}/${row.client_seq}`)).size).toBe(rows.length);
    expect(new Set(rows.map((row) => row.client_id))).toEqual(new Set([sender.clientId]));
    // Every acknowledged event is stored, at the offset it was acknowledged with, and nothing else is.
    expect(rows.length).toBe(acked.size);
    for (const row of rows) expect(acked.get(row.value)).toBe(Number(row.offset));
    console.log(
      `sent ${acked.size} events across two kill -9; ${duplicates} resends recognised as stored; ` +
        `${log.moves.length} moves to the next node`,
    );
  }, 240_000);
});

async function storedEvents(
  url: string,
): Promise<Array<{ value: string; offset: string; client_id: string; client_seq: string }>> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const result = await db.query<{ value: string; offset: string; client_id: string; client_seq: string }>(
      `SELECT value, "offset"::text AS "offset", client_id, client_seq::text AS client_seq
       FROM baton.baton_events WHERE namespace = $1`,
      [NAMESPACE],
    );
    return result.rows;
  } finally {
    await db.end();
  }
}
