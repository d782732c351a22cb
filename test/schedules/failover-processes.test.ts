// Schedules on real node processes: three nodes in one group on PostgreSQL, a 1-second schedule with
// missed = "all" that publishes to a store queue whose handler stores (tick, term) rows. Through kill -9 of
// the primary (twice), SIGSTOP/SIGCONT of the primary and a manual failover, every tick of the window is
// applied exactly once (the ticks table and the effects agree, no gap, no duplicate), each effect carries
// the term of the primary that applied its tick, and terms never go down in tick order (no tick of a
// deposed primary lands after its successor's).
import { join } from 'node:path';

import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';

import { agreedPrimary as agreed, waitFor } from '../support/group.js';
import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { BatonNodeProcess } from '../support/process.js';
import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

let database: TestDatabase | undefined;
const stopped: BatonNodeProcess[] = [];
afterEach(async () => {
  // A node left stopped by SIGSTOP would not die of SIGTERM: let it go on first.
  for (const node of stopped.splice(0)) {
    try {
      process.kill(node.pid, 'SIGCONT');
    } catch {
      // gone already
    }
  }
  await cleanupAll();
  await database?.drop();
  database = undefined;
});

describe('a 1-second schedule on three node processes', () => {
  it('applies every tick exactly once, with its primary term, through kill -9, SIGSTOP and failover', async () => {
    database = await createTestDatabase();
    const url = database.url;
    const configs: string[] = [];
    for (let index = 0; index < 3; index++) {
      const project = await tempProject({
        toml:
          `[node]\nname = "n${index + 1}"\ndata_dir = "data"\nshutdown_timeout_ms = 3000\n[log]\nlevel = "warn"\n` +
          `[http]\nport = ${await freePort()}\n[store]\nurl = "${url}"\npool_size = 4\n` +
          `[group]\nname = "g"\nelector = "postgres"\nlease_ms = 2000\nrenew_deadline_ms = 1200\nheartbeat_ms = 200\n` +
          `[queues.effects]\nhandler = "${join(FIXTURES_DIR, 'ticks-handler.ts')}"\n` +
          `[schedules.beat]\nevery = "1s"\nmissed = "all"\npublish = { queue = "effects" }\n`,
      });
      configs.push(project.configPath);
    }
    const nodes = await Promise.all(configs.map((config) => startBatonNode(config)));
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const tickCount = async (): Promise<number> =>
        Number(
          (await client.query<{ n: string }>('SELECT count(*) AS n FROM baton.baton_schedule_ticks')).rows[0]
            ?.n,
        );
      const waitTicks = async (more: number): Promise<void> => {
        const target = (await tickCount()) + more;
        await waitFor(
          async () => ((await tickCount()) >= target ? true : undefined),
          30_000,
          `${more} more ticks`,
        );
      };
      const live = (): BatonNodeProcess[] => nodes.filter((node) => !stopped.includes(node));

      /** The one primary among `among`, with its term. */
      const agreedPrimary = async (among: readonly BatonNodeProcess[]) => {
        const { primary: node, term } = await agreed(among, 30_000);
        return { node, term };
      };
      let primary = await agreedPrimary(nodes);
      await waitTicks(3);
      // kill -9 of the primary, twice; the killed node comes back as a secondary.
      for (let round = 0; round < 2; round++) {
        const index = nodes.indexOf(primary.node);
        await primary.node.stop('SIGKILL');
        const next = await agreedPrimary(nodes.filter((_, other) => other !== index));
        expect(next.term).toBeGreaterThan(primary.term);
        nodes[index] = await startBatonNode(configs[index] as string);
        primary = await agreedPrimary(nodes);
        await waitTicks(3);
      }
      // SIGSTOP of the primary: another takes over after the lease; the stopped one resumes deposed.
      const paused = primary.node;
      process.kill(paused.pid, 'SIGSTOP');
      stopped.push(paused);
      const successor = await agreedPrimary(live());
      expect(successor.term).toBeGreaterThan(primary.term);
      await waitTicks(2);
      process.kill(paused.pid, 'SIGCONT');
      stopped.splice(stopped.indexOf(paused), 1);
      primary = await agreedPrimary(nodes);
      expect(primary.node).not.toBe(paused);
      await waitTicks(3);
      // A manual failover.
      const moved = await runBaton(['-c', configs[0] as string, 'failover']);
      expect(moved.code).toBe(0);
      const after = await agreedPrimary(nodes);
      expect(after.term).toBeGreaterThan(primary.term);
      await waitTicks(3);

      // Every effect of the ticks applied so far has landed (the queue drains), then the checks.
      const ticks = (
        await client.query<{ tick: string; term: string; cause: string }>(
          `SELECT to_char(tick_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS tick, term, cause
           FROM baton.baton_schedule_ticks WHERE schedule = 'beat' ORDER BY tick_time`,
        )
      ).rows;
      const effectsOf = async () =>
        (
          await client.query<{ tick: string; term: string }>(
            'SELECT tick, term FROM tick_effects ORDER BY row',
          )
        ).rows;
      const read = new Set(ticks.map((tick) => tick.tick));
      await waitFor(
        async () =>
          (await effectsOf()).filter((effect) => read.has(effect.tick)).length >= ticks.length
            ? true
            : undefined,
        30_000,
        'the effects of every tick',
      );
      const effects = await effectsOf();

      // No gap and no duplicate in the ticks table: consecutive seconds from the first to the last.
      const times = ticks.map((tick) => Date.parse(tick.tick));
      for (let index = 1; index < times.length; index++) {
        expect(
          (times[index] as number) - (times[index - 1] as number),
          `after ${ticks[index - 1]?.tick}`,
        ).toBe(1_000);
      }
      // The effects are exactly the ticks (each once), and each carries the term its tick row records.
      const termOf = new Map(ticks.map((tick) => [tick.tick, Number(tick.term)]));
      const effectTicks = effects.map((effect) => effect.tick);
      expect(new Set(effectTicks).size).toBe(effectTicks.length);
      const landed = effects.filter((effect) => termOf.has(effect.tick));
      expect(landed.length).toBe(ticks.length);
      for (const effect of landed) expect(Number(effect.term), effect.tick).toBe(termOf.get(effect.tick));
      // In tick order, terms never go down: no tick of a deposed primary landed after a newer term's.
      const terms = ticks.map((tick) => Number(tick.term));
      for (let index = 1; index < terms.length; index++) {
        expect(terms[index] as number).toBeGreaterThanOrEqual(terms[index - 1] as number);
      }
      const causes = ticks.reduce<Record<string, number>>((count, tick) => {
        count[tick.cause] = (count[tick.cause] ?? 0) + 1;
        return count;
      }, {});
      console.log(
        `${ticks.length} ticks over terms ${[...new Set(terms)].join(', ')}: ${JSON.stringify(causes)}; ` +
          `${effects.length} effects`,
      );
      expect(new Set(terms).size).toBeGreaterThanOrEqual(5);
      expect(causes['catch-up'] ?? 0).toBeGreaterThan(0);

      // Fired through a secondary: passed on to the primary, applied under its term.
      const current = await agreedPrimary(nodes);
      const secondary = nodes.find((node) => node !== current.node) as BatonNodeProcess;
      const fired = await fetch(`${secondary.url}/v1/schedules/beat/fire`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      expect(fired.status).toBe(200);
      expect(await fired.json()).toMatchObject({ schedule: 'beat', term: current.term, applied: true });
    } finally {
      await client.end();
    }
  }, 240_000);
});
