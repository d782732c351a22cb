// Per-queue subcommands (`baton <queue> <subcommand>`) registered by handler modules, as Azafea does.
// Only the handler named on the command line is loaded, so a broken handler never blocks other commands.
import { Command } from 'commander';

import type { ResolvedConfig } from '../../config/types.js';
import type { CommandContext } from '../../handler/handler.js';
import { loadHandler } from '../../handler/load.js';
import type { CliContext } from '../context.js';

export async function registerPluginCommands(
  program: Command,
  ctx: CliContext,
  config: ResolvedConfig,
  queue: string,
): Promise<void> {
  const queueConfig = config.queues[queue];
  if (!queueConfig) return;
  const handler = await loadHandler(queue, queueConfig.handler, config.file);
  if (!handler.registerCommands) return;
  const command = new Command(queue).description(
    `commands of queue "${queue}" (from ${queueConfig.handler})`,
  );
  const context: CommandContext = {
    queue,
    sql: (text, params) => ctx.withAdmin((admin) => admin.sql(text, params)),
    publish: (records) => ctx.withAdmin((admin) => admin.publish(queue, records)),
  };
  handler.registerCommands(command, context);
  program.addCommand(command);
}
