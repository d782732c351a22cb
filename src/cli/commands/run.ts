// `baton run`: starts a node and runs it until SIGINT or SIGTERM, then drains and exits 0.
import type { Command } from 'commander';

import { startNode } from '../../node/start.js';
import type { CliContext } from '../context.js';

export function registerRun(program: Command, ctx: CliContext): void {
  program
    .command('run')
    .description('start a node: consume the configured queues and serve the HTTP API')
    .option('--port <port>', 'HTTP port (overrides [http] port)', parsePort)
    .option('--host <host>', 'HTTP host (overrides [http] host)')
    .action(async (options: { port?: number; host?: string }) => {
      const config = await ctx.config({ http: { port: options.port, host: options.host } });
      const log = await ctx.logger();
      const node = await startNode(config, { log });
      await new Promise<void>((resolve) => {
        const stop = (signal: NodeJS.Signals): void => {
          log.info({ signal }, `${signal}: stopping (finishing in-flight batches)`);
          process.once(signal, () => {
            log.warn(`${signal} again: exiting at once`);
            process.exit(130);
          });
          void node.stop().then(resolve);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      log.info(`node ${node.name} stopped`);
    });
}

function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid port "${value}"`);
  return port;
}
