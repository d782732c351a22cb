// The chaos run's witness: a primary-only component that writes a row (node, term, database time) about
// every 20 ms, each in a transaction that first checks the fence with ctx.assertPrimary(tx). On the one
// database clock, a row of a lower term stamped after the first row of a higher term would be a write of a
// deposed primary that the fence let through: an overlap of primaries. The node's name comes from
// CHAOS_NODE, set by the chaos run for each node process.
import { env } from 'node:process';
import { setTimeout as delay } from 'node:timers/promises';

import { sql } from 'drizzle-orm';

import { defineComponent } from '../../src/components/component.js';
import type { ComponentContext } from '../../src/components/component.js';

const EVERY_MS = 20;
const node = env['CHAOS_NODE'] ?? 'unknown';
let work: Promise<void> | undefined;

async function write(ctx: ComponentContext): Promise<void> {
  while (!ctx.signal.aborted) {
    try {
      await ctx.store.transaction(async (tx) => {
        await ctx.assertPrimary(tx);
        await tx.execute(
          sql`INSERT INTO chaos_witness (node, term, at) VALUES (${node}, ${ctx.term}, clock_timestamp())`,
        );
      });
    } catch (error) {
      // Fenced, or the database is away: the supervisor stops this run when the term is over; a lost
      // connection is only a gap in the rows.
      if (!ctx.signal.aborted) ctx.log.debug({ err: error }, 'witness row not written');
    }
    await delay(EVERY_MS, undefined, { signal: ctx.signal }).catch(() => undefined);
  }
}

export default defineComponent({
  name: 'witness',
  runOn: 'primary',
  start(ctx) {
    work = write(ctx);
  },
  async stop() {
    await work;
    work = undefined;
  },
});
