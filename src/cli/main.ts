// The `baton` command line. It parses arguments and prints; what it does lives in the node and admin
// modules. Exit codes: 0 ok, 1 failure, 2 invalid config, 3 nothing to run, 4 a backend unreachable.
// Registering the commands loads no driver, server or schema library: each command imports what it
// needs when it runs, so `baton --help` and `baton --version` start as fast as Node itself.
import { readFileSync } from 'node:fs';

import { Command, CommanderError, Option } from 'commander';

import {
  BackendUnavailableError,
  ConfigError,
  NothingToRunError,
  StoreLockedError,
  describeError,
  statementErrorOf,
} from '../errors.js';
import type { LogFormat } from '../log.js';
import { registerClusterCommands } from './commands/cluster.js';
import { registerEventCommands } from './commands/events.js';
import { registerInit } from './commands/init.js';
import { registerPluginCommands } from './commands/plugins.js';
import { registerRecordCommands } from './commands/records.js';
import { registerRun } from './commands/run.js';
import { registerStoreCommands } from './commands/store.js';
import { registerScheduleCommands } from './commands/schedules.js';
import { registerTaskCommands } from './commands/tasks.js';
import { registerWorkflowCommands } from './commands/workflows.js';
import type { CliIo, GlobalOptions } from './context.js';
import { CliContext } from './context.js';

export const EXIT = { ok: 0, failure: 1, config: 2, nothingToRun: 3, backend: 4 } as const;

export async function main(
  argv: readonly string[],
  env: Record<string, string | undefined>,
  io?: Partial<CliIo>,
): Promise<number> {
  if (io?.stdout === undefined) endOutputWithItsReader(process.stdout);
  const ctx = new CliContext({
    stdout: io?.stdout ?? process.stdout,
    stderr: io?.stderr ?? process.stderr,
    stdin: io?.stdin ?? process.stdin,
    env,
    cwd: io?.cwd ?? process.cwd(),
  });
  const program = buildProgram(ctx);
  try {
    await addPluginCommands(program, ctx, argv.slice(2));
    await program.parseAsync([...argv]);
    // A command may set process.exitCode, as a handler's subcommand would in any Node program: keep it.
    return Number(process.exitCode ?? EXIT.ok);
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode;
    // A statement the database refused says the database's reason and SQLSTATE, not drizzle's report.
    const shown = statementErrorOf(error) ?? error;
    ctx.io.stderr.write(
      `baton: ${shown instanceof Error && 'code' in shown ? shown.message : describeError(shown)}\n`,
    );
    return exitCode(error);
  }
}

/**
 * A reader that goes away (`baton sql … | head`) ends the output, not the command: what is written after
 * is dropped instead of crashing the process with an unhandled EPIPE.
 */
function endOutputWithItsReader(stream: NodeJS.WriteStream): void {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE' && error.code !== 'ERR_STREAM_DESTROYED') throw error;
  });
}

export function exitCode(error: unknown): number {
  if (error instanceof ConfigError) return EXIT.config;
  if (error instanceof NothingToRunError) return EXIT.nothingToRun;
  if (error instanceof BackendUnavailableError || error instanceof StoreLockedError) return EXIT.backend;
  return EXIT.failure;
}

function buildProgram(ctx: CliContext): Command {
  const program = new Command('baton')
    .description('Baton: queues and events in, handler plugins write to PostgreSQL in one transaction')
    .option('-c, --config <file>', 'config file (default: ./baton.toml when it exists)')
    .option('-v, --verbose', 'debug logs')
    .addOption(
      new Option(
        '--log-format <format>',
        'log lines for people or machines (overrides [log] format)',
      ).choices(LOG_FORMATS),
    )
    .version(packageVersion(), '-V, --version', 'print the version of Baton')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({
      writeOut: (text) => ctx.io.stdout.write(text),
      writeErr: (text) => ctx.io.stderr.write(text),
    })
    .hook('preAction', (command) => {
      ctx.setOptions(command.optsWithGlobals<GlobalOptions>());
    });
  registerRun(program, ctx);
  registerRecordCommands(program, ctx);
  registerStoreCommands(program, ctx);
  registerClusterCommands(program, ctx);
  registerTaskCommands(program, ctx);
  registerScheduleCommands(program, ctx);
  registerWorkflowCommands(program, ctx);
  registerEventCommands(program, ctx);
  registerInit(program, ctx);
  return program;
}

/** When the first word names a configured queue, load its handler's subcommands. */
async function addPluginCommands(program: Command, ctx: CliContext, args: readonly string[]): Promise<void> {
  const options: GlobalOptions = {};
  let first: string | undefined;
  for (let index = 0; index < args.length; index++) {
    const arg = args[index] ?? '';
    if (arg === '-c' || arg === '--config') options.config = args[++index] ?? '';
    else if (arg.startsWith('--config=')) options.config = arg.slice('--config='.length);
    else if (arg === '-v' || arg === '--verbose') options.verbose = true;
    else if (arg === '--log-format') index++;
    else if (!arg.startsWith('-')) {
      first = arg;
      break;
    }
  }
  if (first === undefined || program.commands.some((command) => command.name() === first)) return;
  ctx.setOptions(options);
  const config = await ctx.config();
  await registerPluginCommands(program, ctx, config, first);
}

/** The version in the package's package.json (two folders up, from src/cli/ as from dist/cli/). */
function packageVersion(): string {
  const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  const parsed: unknown = JSON.parse(text);
  const version =
    typeof parsed === 'object' && parsed !== null && 'version' in parsed ? parsed.version : undefined;
  return typeof version === 'string' ? version : 'unknown';
}

/** The values of --log-format (as log.ts's LOG_FORMATS: that module loads pino, which --help does not need). */
const LOG_FORMATS = ['auto', 'json', 'pretty'] as const satisfies readonly LogFormat[];
