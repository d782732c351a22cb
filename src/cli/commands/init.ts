// `baton init [dir]`: writes a project that runs (config, handler, migration, TypeScript setup) and says what
// to do next. No prompts: flags say what differs from the defaults.
import path from 'node:path';

import type { Command } from 'commander';

import type { CliContext } from '../context.js';

export const DEFAULT_QUEUE = 'messages';

interface InitOptions {
  queue: string;
  store?: string;
  force?: boolean;
}

export function registerInit(program: Command, ctx: CliContext): void {
  program
    .command('init')
    .description('write baton.toml, a handler with its table and migration, and the TypeScript setup')
    .argument('[dir]', 'the project folder, created when missing', '.')
    .option('--queue <name>', 'name of the queue (and of its handler file and table)', DEFAULT_QUEUE)
    .option('--store <url>', 'PostgreSQL URL of the store (default: the embedded store in .baton/)')
    .option('--force', 'replace baton.toml, the handler and its migration when they exist')
    .action(async (dir: string, options: InitOptions) => {
      const { scaffold } = await import('../scaffold.js');
      const root = path.resolve(ctx.io.cwd, dir);
      const result = await scaffold({
        dir: root,
        queue: options.queue,
        storeUrl: options.store,
        force: options.force === true,
      });
      if (!result.ok) {
        ctx.io.stderr.write(
          `baton: not initialising ${root}: ${result.existing.join(', ')} exist${result.existing.length === 1 ? 's' : ''}.\n` +
            'Nothing was written. Run again with --force to replace them, or pick another --queue.\n',
        );
        process.exitCode = 1;
        return;
      }
      for (const file of result.files) {
        ctx.print(`${file.action.padEnd(8)} ${file.path}${file.note ? ` (${file.note})` : ''}`);
      }
      const steps: string[] = [];
      if (path.relative(ctx.io.cwd, root) !== '')
        steps.push(`cd ${shellWord(path.relative(ctx.io.cwd, root))}`);
      const { dependencies, devDependencies } = result.missing;
      if (dependencies.length > 0) steps.push(`npm install ${dependencies.join(' ')}`);
      if (devDependencies.length > 0) steps.push(`npm install -D ${devDependencies.join(' ')}`);
      steps.push(
        'npx tsc --noEmit              # type-check the handler',
        `npx baton migrate             # create the table ${result.table}`,
        'npx baton run                 # a node on http://127.0.0.1:8080 (Ctrl-C stops it)',
      );
      ctx.print();
      ctx.print('Next:');
      for (const step of steps) ctx.print(`  ${step}`);
      ctx.print();
      ctx.print('Then, from another terminal:');
      ctx.print(
        `  curl -X POST http://127.0.0.1:8080/v1/queues/${options.queue}/records -d '{"type":"hello"}'`,
      );
      ctx.print(`  npx baton sql "select * from ${result.table}"`);
    });
}

/** `word`, quoted for a POSIX shell when it needs to be. */
function shellWord(word: string): string {
  return /^[\w./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
