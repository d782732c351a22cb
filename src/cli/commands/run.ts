// `baton run`: starts a node and runs it until SIGINT or SIGTERM (or, started by npx or npm, until the process
// that launched it is gone), then drains and exits 0.
import type { Command } from 'commander';

import type { CliContext } from '../context.js';
import { startedByPackageManager, watchLauncher } from '../launcher.js';

export function registerRun(program: Command, ctx: CliContext): void {
  program
    .command('run')
    .description('start a node: consume the configured queues and serve the HTTP API')
    .option('--port <port>', 'HTTP port (overrides [http] port)', parsePort)
    .option('--host <host>', 'HTTP host (overrides [http] host)')
    .action(async (options: { port?: number; host?: string }) => {
      const config = await ctx.config({ http: { port: options.port, host: options.host } });
      const log = await ctx.logger();
      const [{ startNode }, { installCrashLog }] = await Promise.all([
        import('../../node/start.js'),
        import('../../node/crash-log.js'),
      ]);
      const node = await startNode(config, { log });
      // One structured line instead of Node's dump when a handler throws outside its promise.
      installCrashLog(log, () => node.handlerCalls());
      let unwatch = (): void => undefined;
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (signal: NodeJS.Signals): void => {
          stopping = true;
          log.info({ signal }, `${signal}: stopping (finishing in-flight batches)`);
          const first = Date.now();
          const again = (): void => {
            // A launcher (npm, npx) passes on the Ctrl-C that already reached this process through its
            // process group: a repeat within moments is the same request, not an insistence.
            if (Date.now() - first < SAME_SIGNAL_MS) {
              process.once(signal, again);
              return;
            }
            log.warn(`${signal} again: exiting at once`);
            process.exit(130);
          };
          process.once(signal, again);
          void node.stop().then(resolve);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        if (startedByPackageManager(ctx.io.env)) {
          // Under npx the SIGTERM meant for the node ends the shell between them: its exit is that SIGTERM.
          unwatch = watchLauncher((launcher) => {
            if (stopping) return;
            stopping = true;
            log.info(
              { launcher },
              `the process that launched this node (pid ${launcher}) is gone: stopping (finishing in-flight batches)`,
            );
            void node.stop().then(resolve);
          });
        }
      });
      unwatch();
      log.info(`node ${node.name} stopped`);
    });
}

function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid port "${value}"`);
  return port;
}

/** A second signal this soon after the first is taken as the same one, delivered twice. */
const SAME_SIGNAL_MS = 500;
