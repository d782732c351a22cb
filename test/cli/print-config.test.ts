// `baton print-config` prints the configuration in effect as baton.toml says it (TOML by default, `--json`
// for scripts): the file with the environment and flags applied, which the loader reads back to the same
// resolved config.
import { writeFile } from 'node:fs/promises';

import { parse } from 'smol-toml';
import { afterEach, describe, expect, it } from 'vitest';

import { loadConfig, resolveConfig } from '../../src/config/load.js';
import type { ResolvedConfig } from '../../src/config/types.js';
import { cleanupAll, runBaton, tempProject } from '../support/process.js';

afterEach(cleanupAll);

const TOML = `[node]
name = "printer"
data_dir = "data"

[log]
level = "warn"

[http]
port = 9123
hosts = ["baton.example.com"]

[queues.ping]
handler = "./handlers/ping.ts"
batch_size = 100

[queues.metrics]
handler = "./handlers/metrics.ts"
backend = "redis"
key = "metrics-list"

[group]
name = "printers"
elector = "redis"

[events]
retention_days = 3

[tasks.report]
command = "echo report"

[[rules]]
on = { key = "go" }
action = "start"
task = "report"
`;

/** The environment of both the command and the loader here: it applies to what is printed. */
const ENV = { BATON_QUEUES__PING__MAX_ATTEMPTS: '9' };

function withoutFile(config: ResolvedConfig): Omit<ResolvedConfig, 'file'> {
  const { file: _file, ...rest } = config;
  return rest;
}

describe('baton print-config', () => {
  it('prints TOML that the loader reads back to the same config, and JSON with the same keys', async () => {
    const project = await tempProject({ toml: TOML });
    const expected = await loadConfig({
      cwd: project.dir,
      file: project.configPath,
      env: ENV,
      overrides: { log: { format: 'pretty' } },
    });

    const toml = await runBaton(['-c', project.configPath, '--log-format', 'pretty', 'print-config'], {
      cwd: project.dir,
      env: ENV,
    });
    expect(toml.code).toBe(0);
    expect(toml.stdout).toMatch(/^# The configuration in effect: /);
    expect(toml.stdout).toContain('[queues.ping]\n');
    expect(toml.stdout).toContain('max_attempts = 9\n');
    expect(toml.stdout).toContain('format = "pretty"\n');
    expect(toml.stdout).not.toMatch(/maxAttempts|batchSize|dataDir/);
    // Read back from the same folder (a task's commands run in the config file's folder), without the env.
    const printedPath = project.path('printed.toml');
    await writeFile(printedPath, toml.stdout);
    const fromToml = await loadConfig({ cwd: project.dir, file: printedPath, env: {} });
    expect(withoutFile(fromToml)).toEqual(withoutFile(expected));

    const json = await runBaton(
      ['-c', project.configPath, '--log-format', 'pretty', 'print-config', '--json'],
      { cwd: project.dir, env: ENV },
    );
    expect(json.code).toBe(0);
    const input: unknown = JSON.parse(json.stdout);
    expect(input).toEqual(parse(toml.stdout));
    const fromJson = resolveConfig(input, { baseDir: project.dir, env: {} });
    expect(withoutFile(fromJson)).toEqual(withoutFile(expected));
  });
});
