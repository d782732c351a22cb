// Commands on the store itself: `sql`, `initdb`, `print-config`.
import type { Command } from 'commander';

import { redactConfig } from '../../config/redact.js';
import { rowJson } from '../../util/wire.js';
import type { CliContext } from '../context.js';
import { cellText, formatTable } from '../output.js';

export function registerStoreCommands(program: Command, ctx: CliContext): void {
  program
    .command('sql')
    .description('run one SQL statement on the store and print its rows (through the running node, if any)')
    .argument('<statement>', 'the SQL statement; $1, $2… refer to the parameters')
    .argument('[params...]', 'positional parameters')
    .option('--json', 'print rows as JSON')
    .action(async (statement: string, params: string[], options: { json?: boolean }) => {
      const result = await ctx.withAdmin((admin) => admin.sql(statement, params));
      if (options.json) return ctx.printJson({ columns: result.columns, rows: result.rows.map(rowJson) });
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
    .command('print-config')
    .description('print the resolved configuration (secrets hidden)')
    .action(async () => {
      ctx.printJson(redactConfig(await ctx.config()));
    });
}
