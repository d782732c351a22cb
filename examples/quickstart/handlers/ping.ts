// The quickstart handler: a record is a JSON object {"name": …, "timestamp": …}; it becomes a row of the
// table `ping`. A record that is not JSON, or lacks a field, throws: Baton retries it, then moves it to
// the error queue `errors-ping` with the reason.
import type { Command } from 'commander';
import { sql } from 'drizzle-orm';
import { pgTable, serial, text, timestamp } from 'drizzle-orm/pg-core';

import type { CommandContext, Tx } from 'baton-runtime';

export const ping = pgTable('ping', {
  id: serial('id').primaryKey(),
  name: text('name').notNull(),
  timestamp: timestamp('timestamp', { withTimezone: true, mode: 'string' }).notNull(),
});

/** Tables this handler writes to: `baton initdb` (and `baton run`) create them. */
export const schema = { ping };

export interface Ping {
  name: string;
  /** As sent (ISO 8601): checked here, converted by PostgreSQL. */
  timestamp: string;
}

export function parsePing(record: Buffer): Ping {
  const value: unknown = JSON.parse(record.toString('utf8'));
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError('a ping must be a JSON object');
  }
  const { name, timestamp } = value as Record<string, unknown>;
  if (typeof name !== 'string' || name.length === 0) throw new TypeError('missing field "name"');
  if (typeof timestamp !== 'string') throw new TypeError('missing field "timestamp"');
  if (Number.isNaN(Date.parse(timestamp)))
    throw new TypeError(`invalid timestamp ${JSON.stringify(timestamp)}`);
  return { name, timestamp };
}

/** One record: the plain drizzle way. */
export async function process(tx: Tx, record: Buffer): Promise<void> {
  await tx.insert(ping).values(parsePing(record));
}

/**
 * A whole batch with the same effect as process(): one INSERT with two array parameters instead of one
 * statement (or one parameter per value) per record. If any record fails, Baton bisects the batch to
 * find it, so the others still commit.
 */
export async function processBatch(tx: Tx, records: readonly Buffer[]): Promise<void> {
  const pings = records.map(parsePing);
  const names = pings.map((p) => p.name);
  const times = pings.map((p) => p.timestamp);
  await tx.execute(
    sql`INSERT INTO ${ping} (name, timestamp)
        SELECT * FROM unnest(${sql.param(names)}::text[], ${sql.param(times)}::timestamptz[])`,
  );
}

/** `baton -c baton.toml ping count` and `baton -c baton.toml ping last`. */
export function registerCommands(cmd: Command, ctx: CommandContext): void {
  cmd
    .command('count')
    .description('print how many pings are stored')
    .action(async () => {
      const result = await ctx.sql('SELECT count(*)::int AS count FROM ping');
      console.log(Number(result.rows[0]?.['count'] ?? 0));
    });
  cmd
    .command('last')
    .description('print the latest pings')
    .option('-n, --number <n>', 'how many', '5')
    .action(async (options: { number: string }) => {
      const result = await ctx.sql('SELECT name, timestamp FROM ping ORDER BY id DESC LIMIT $1', [
        Number(options.number),
      ]);
      for (const row of result.rows) console.log(`${String(row['timestamp'])}  ${String(row['name'])}`);
    });
}
