// The first commands someone runs: `--version` and `--help` answer whatever the folder holds (they load no
// config), and the first command on a new embedded store makes it from the seed built with Baton.
import { existsSync, readFileSync } from 'node:fs';

import { afterEach, describe, expect, it } from 'vitest';

import { cleanupAll, REPO_ROOT, runBaton, tempProject } from '../support/process.js';

afterEach(cleanupAll);

const VERSION = (JSON.parse(readFileSync(`${REPO_ROOT}package.json`, 'utf8')) as { version: string }).version;

describe('first contact', () => {
  it('--version and -V print the version of the package and exit 0, even beside an invalid config', async () => {
    const project = await tempProject({ toml: '[node]\nnot_an_option = 1\n' });
    for (const flag of ['--version', '-V']) {
      const result = await runBaton([flag], { cwd: project.dir });
      expect(result).toMatchObject({ code: 0, stdout: `${VERSION}\n`, stderr: '' });
    }
  });

  it('--help lists the commands and exits 0', async () => {
    const result = await runBaton(['--help']);
    expect(result.code).toBe(0);
    for (const command of ['run', 'sql', 'migrate', 'status', 'tasks', 'schedules', 'events']) {
      expect(result.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    }
  });

  it('makes a new embedded store from the seed', async () => {
    const project = await tempProject({ toml: '[node]\ndata_dir = "data"\n' });
    const result = await runBaton(['-v', 'sql', 'select count(*) from baton_migrations'], {
      cwd: project.dir,
      timeoutMs: 120_000,
    });
    expect(result.code).toBe(0);
    expect(Number(result.stdout.trim())).toBeGreaterThan(0);
    expect(result.stderr).toContain('from the seed');
    expect(existsSync(project.path('data/store/PG_VERSION'))).toBe(true);
  }, 180_000);
});
