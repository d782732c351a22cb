// Commands on the store itself: `sql`, `initdb`, `print-config`.
import type { Command } from 'commander';
import { Option } from 'commander';
import { stringify } from 'smol-toml';

import { configAsInput } from '../../config/as-input.js';
import { redactConfig } from '../../config/redact.js';
import type { CliContext } from '../context.js';
import type { Progress } from '../output.js';
import { cellText, formatTable, progressBar } from '../output.js';

export function registerStoreCommands(program: Command, ctx: CliContext): void {
  program
    .command('sql')
    .description('run one SQL statement on the store and print its rows (through the running node, if any)')
    .argument('<statement>', 'the SQL statement; $1, $2… refer to the parameters')
    .argument('[params...]', 'positional parameters')
    .option('--json', 'print rows as JSON')
    .action(async (statement: string, params: string[], options: { json?: boolean }) => {
      const result = await ctx.withAdmin((admin) => admin.sql(statement, params));
      if (options.json) {
        const { queryResultJson } = await import('../../store/wire.js');
        return ctx.printJson(queryResultJson(result));
      }
      if (result.columns.length === 0) return ctx.print('ok');
      if (result.columns.length === 1 && result.rows.length === 1) {
        return ctx.print(cellText(result.rows[0]?.[result.columns[0] ?? '']));
      }
      ctx.print(
        formatTable(
          result.columns,
          result.rows.map((row) => result.columns.map((column) => cellText(row[column]))),
        ),
      );
      ctx.print(`(${result.rows.length} row${result.rows.length === 1 ? '' : 's'})`);
    });

  program
    .command('initdb')
    .description("create the tables of the handlers' schemas that do not exist yet")
    .action(async () => {
      const created = await ctx.withAdmin((admin) => admin.initdb());
      ctx.print(created.length > 0 ? `created ${created.join(', ')}` : 'all tables exist already');
    });

  program
    .command('migrate')
    .description(
      "apply pending migrations (Baton's and each queue's), then create tables of queues without any",
    )
    .option('--json', 'print the result as JSON')
    .action(async (options: { json?: boolean }) => {
      // Each migration is reported as it is applied (all of them commit together at the end). Through a
      // running node's HTTP API the node applies them and only the result comes back.
      let progress: Progress | undefined;
      const update = await ctx.withAdmin((admin) =>
        admin.migrate((id, done, total) => {
          if (options.json) return;
          progress ??= progressBar(ctx.io.stderr, 'migrating', total);
          progress.update(done);
          if (done === total) progress.finish();
        }),
      );
      for (const warning of update.warnings) ctx.io.stderr.write(`baton: warning: ${warning}\n`);
      if (options.json) return ctx.printJson(update);
      for (const id of update.migrated) ctx.print(`applied ${id}`);
      for (const table of update.created) ctx.print(`created table ${table}`);
      if (update.migrated.length + update.created.length === 0) ctx.print('the schema is up to date');
    });

  program
    .command('make-migration')
    .description(
      "write the next migration of a queue: what its handler's schema adds to what its migrations give (the first one creates its tables)",
    )
    .argument('<queue>', 'queue name')
    .option('-m, --message <message>', 'what the migration does', 'migration')
    .action(async (queue: string, options: { message: string }) => {
      const made = await ctx.withAdmin((admin) => admin.makeMigration(queue, options.message));
      for (const warning of made.warnings) ctx.io.stderr.write(`baton: warning: ${warning}\n`);
      if (!made.path)
        return ctx.print(`the migrations of queue "${queue}" already give its handler's schema`);
      ctx.print(`wrote ${made.path}${made.baseline ? " (the baseline: it creates the queue's tables)" : ''}`);
      for (const statement of made.statements) ctx.print(`  ${statement.trim().split('\n')[0] ?? ''}`);
    });

  program
    .command('print-config')
    .description('print the configuration in effect, as baton.toml would say it (secrets hidden)')
    .option('--toml', 'print it as TOML (the default)')
    .addOption(new Option('--json', 'print it as JSON (same keys) rather than TOML').conflicts('toml'))
    .action(async (options: { json?: boolean }) => {
      const config = await ctx.config();
      const printed = redactConfig(configAsInput(config));
      if (options.json) return ctx.printJson(printed);
      const source = config.file ?? 'no config file';
      ctx.print(`# The configuration in effect: ${source} with the environment and flags applied,`);
      ctx.print('# defaults filled in and paths made absolute. Secrets are shown as ***.');
      ctx.print();
      ctx.io.stdout.write(stringify(printed));
    });
}
