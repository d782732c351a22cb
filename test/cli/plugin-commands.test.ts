// A handler's subcommands (`baton <queue> <subcommand>`): the exit code is the one the subcommand set.
import { afterEach, describe, expect, it } from 'vitest';

import { cleanupAll, runBaton, tempProject } from '../support/process.js';

afterEach(cleanupAll);

const HANDLER = `import nodeProcess from 'node:process';

export function process() {}

export function registerCommands(cmd) {
  cmd
    .command('check')
    .option('--exit-code <code>')
    .action((options) => {
      console.log('checked');
      if (options.exitCode !== undefined) nodeProcess.exitCode = Number(options.exitCode);
    });
}
`;

describe('a handler subcommand', () => {
  it('makes baton exit with the code it set in process.exitCode, 0 when it set none', async () => {
    const project = await tempProject({
      toml: '[node]\ndata_dir = "data"\n[http]\nenabled = false\n[queues.q]\nhandler = "./handlers/q.js"\n',
      files: { 'handlers/q.js': HANDLER },
    });
    const check = (...args: string[]) =>
      runBaton(['-c', project.configPath, 'q', 'check', ...args], { cwd: project.dir });

    const ok = await check();
    expect(ok).toMatchObject({ code: 0, stderr: '' });
    expect(ok.stdout).toBe('checked\n');
    expect(await check('--exit-code', '1')).toMatchObject({ code: 1, stdout: 'checked\n' });
    expect(await check('--exit-code', '5')).toMatchObject({ code: 5, stdout: 'checked\n' });
  });
});
