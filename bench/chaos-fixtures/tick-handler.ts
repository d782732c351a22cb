// The handler of the chaos run's queue `sq`, the target of its schedule `beat` (every 1 s, missed = "all"):
// each record is the default payload of a schedule's publish action, {"schedule", "tick", "term"}; it is
// inserted into `chaos_tick_effects` with no unique constraint, so that a tick applied twice shows, and with
// the term the record carries, to compare with the term of its row in baton_schedule_ticks.
import { sql } from 'drizzle-orm';
import { bigint, bigserial, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

import type { Tx } from '../../src/index.js';

export const chaosTickEffects = pgTable('chaos_tick_effects', {
  row: bigserial('row', { mode: 'number' }).primaryKey(),
  schedule: text('schedule').notNull(),
  tick: timestamp('tick', { withTimezone: true, mode: 'date' }).notNull(),
  term: bigint('term', { mode: 'number' }).notNull(),
});
export const schema = { chaosTickEffects };

interface Effect {
  readonly schedule: string;
  readonly tick: string;
  readonly term: number;
}

function parseEffect(record: Buffer): Effect {
  const value: unknown = JSON.parse(record.toString('utf8'));
  if (typeof value === 'object' && value !== null) {
    const { schedule, tick, term } = value as Record<string, unknown>;
    if (typeof schedule === 'string' && typeof tick === 'string' && typeof term === 'number')
      return { schedule, tick, term };
  }
  throw new Error(`not a tick of a schedule: ${record.toString('utf8')}`);
}

export async function processBatch(tx: Tx, records: readonly Buffer[]): Promise<void> {
  const effects = records.map(parseEffect);
  await tx.execute(
    sql`INSERT INTO chaos_tick_effects (schedule, tick, term)
        SELECT * FROM unnest(${sql.param(effects.map((e) => e.schedule))}::text[],
                             ${sql.param(effects.map((e) => e.tick))}::timestamptz[],
                             ${sql.param(effects.map((e) => e.term))}::bigint[])`,
  );
}
