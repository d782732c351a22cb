// The embedded store runs each statement in the node's thread: one of Baton's own statements that takes
// SLOW_STATEMENT_MS or more is logged with its text, so that a pause of the node can be told apart.
import { Writable } from 'node:stream';

import { sql } from 'drizzle-orm';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { openPgliteStore, SLOW_STATEMENT_MS } from '../../src/store/pglite.js';
import type { Store } from '../../src/store/store.js';

describe('embedded store: slow statements', () => {
  const lines: Array<Record<string, unknown>> = [];
  let store: Store;

  beforeAll(async () => {
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
        done();
      },
    });
    store = await openPgliteStore(undefined, { log: pino({ level: 'warn' }, sink) });
  }, 60_000);

  afterAll(async () => {
    await store.close();
  });

  it('logs a statement that took SLOW_STATEMENT_MS or more, with its time and text, and not a quick one', async () => {
    await store.execute(sql`SELECT 1 AS quick`);
    expect(lines).toEqual([]);

    // Grows the series until one statement takes long enough, so that a fast machine cannot dodge the test.
    for (let rows = 1_000_000; lines.length === 0 && rows <= 64_000_000; rows *= 2) {
      const started = performance.now();
      await store.execute(sql`SELECT count(*) AS n FROM generate_series(1, ${rows}::int) AS slow_series`);
      if (performance.now() - started >= SLOW_STATEMENT_MS + 50) break;
    }
    const [line] = lines;
    expect(line?.['msg']).toMatch(
      /^embedded store: a statement took \d+ ms, during which the node answered nothing else$/,
    );
    expect(Number(line?.['ms'])).toBeGreaterThanOrEqual(SLOW_STATEMENT_MS);
    expect(line?.['sql']).toContain('slow_series');
  }, 300_000);
});
