// A config that cannot be used stops `baton` before anything starts, with an exit code that says why and a
// message that names the key or module at fault: 2 invalid config, 3 nothing to run, 4 a backend unreachable.
import { existsSync } from 'node:fs';

import { parse } from 'smol-toml';
import { afterEach, describe, expect, it } from 'vitest';

import { cleanupAll, freePort, runBaton, tempProject } from '../support/process.js';

afterEach(cleanupAll);

/** A config with one queue whose handler is `handler`, its own data dir and a free port. */
async function config(handler: string, extra = ''): Promise<string> {
  return `[node]
data_dir = "data"

[http]
port = ${await freePort()}
${extra}
[queues.ping]
handler = ${JSON.stringify(handler)}
`;
}

const GOOD_HANDLER = `export function process() {}\n`;

describe('baton with an invalid config', () => {
  it('reports malformed TOML with its line number (exit 2)', async () => {
    const project = await tempProject({
      toml: '[node]\nname = "a"\n\n[queues.ping]\nbatch_size = = 3\n',
    });
    const result = await runBaton(['-c', project.configPath, 'run']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(project.configPath);
    expect(result.stderr).toMatch(/line 5, column \d+/);
  });

  it('refuses an unknown key and names it (exit 2)', async () => {
    const project = await tempProject({
      toml: (await config('./handlers/ping.ts')) + 'batchsize = 10\n',
      files: { 'handlers/ping.ts': GOOD_HANDLER },
    });
    const result = await runBaton(['-c', project.configPath, 'run']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('queues.ping.batchsize');
    expect(result.stderr).toContain('did you mean "batch_size"?');
    expect(existsSync(project.path('data'))).toBe(false);
  });

  it('refuses a value of the wrong type and names its key (exit 2)', async () => {
    const project = await tempProject({
      toml: (await config('./handlers/ping.ts')) + 'batch_size = "abc"\n',
      files: { 'handlers/ping.ts': GOOD_HANDLER },
    });
    const result = await runBaton(['-c', project.configPath, 'run']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('queues.ping.batch_size');
    expect(result.stderr).toContain('got "abc"');
  });

  it('refuses a handler file that does not exist (exit 2)', async () => {
    const project = await tempProject({ toml: await config('./handlers/missing.ts') });
    const result = await runBaton(['-c', project.configPath, 'run']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('queues.ping.handler');
    expect(result.stderr).toContain(project.path('handlers/missing.ts'));
    expect(existsSync(project.path('data'))).toBe(false);
  });

  it('refuses a handler with a syntax error and names the module (exit 2)', async () => {
    const project = await tempProject({
      toml: await config('./handlers/broken.ts'),
      files: { 'handlers/broken.ts': 'export function process(tx, record {\n  return;\n}\n' },
    });
    const result = await runBaton(['-c', project.configPath, 'run']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('queues.ping.handler');
    expect(result.stderr).toContain(project.path('handlers/broken.ts'));
    // The syntax error itself (esbuild's transform error through tsx), not some other loading failure.
    expect(result.stderr).toMatch(/TransformError|SyntaxError/);
    expect(existsSync(project.path('data'))).toBe(false);
  });

  it('refuses a handler that exports neither process nor processBatch (exit 2)', async () => {
    const project = await tempProject({
      toml: await config('./handlers/empty.ts'),
      files: { 'handlers/empty.ts': 'export const schema = {};\nexport function handle() {}\n' },
    });
    const result = await runBaton(['-c', project.configPath, 'run']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('queues.ping.handler');
    expect(result.stderr).toContain(project.path('handlers/empty.ts'));
    expect(result.stderr).toMatch(/exports neither process\(\) nor processBatch\(\)/);
  });

  it('has nothing to run without a queue, component or task and with events off (run exits 3)', async () => {
    const project = await tempProject({
      toml: `[node]\ndata_dir = "data"\n\n[http]\nport = ${await freePort()}\n\n[events]\nenabled = false\n`,
    });
    const result = await runBaton(['-c', project.configPath, 'run']);
    expect(result.code).toBe(3);
    expect(result.stderr).toContain('nothing to run');
  });

  it('refuses an env override of the wrong type and names the key and variable (exit 2)', async () => {
    const project = await tempProject({
      toml: await config('./handlers/ping.ts'),
      files: { 'handlers/ping.ts': GOOD_HANDLER },
    });
    const result = await runBaton(['-c', project.configPath, 'run'], { env: { BATON_HTTP__PORT: 'abc' } });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('http.port');
    expect(result.stderr).toContain('BATON_HTTP__PORT');
  });

  it('requires a token when listening off loopback (exit 2)', async () => {
    const project = await tempProject({
      toml: await config('./handlers/ping.ts', 'host = "0.0.0.0"\n'),
      files: { 'handlers/ping.ts': GOOD_HANDLER },
    });
    const result = await runBaton(['-c', project.configPath, 'run']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('http.token');
  });

  it('refuses an unknown token scope and names its key (exit 2)', async () => {
    const project = await tempProject({
      toml: await config(
        './handlers/ping.ts',
        '\n[[http.tokens]]\ntoken = "team-token-1234"\nscopes = ["reed"]\n',
      ),
      files: { 'handlers/ping.ts': GOOD_HANDLER },
    });
    const result = await runBaton(['-c', project.configPath, 'run']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('http.tokens[0].scopes[0]');
    expect(result.stderr).toContain('got "reed"');
  });

  it('exits 4 when the data dir cannot be created', async () => {
    const project = await tempProject({
      toml: (await config('./handlers/ping.ts')).replace('data_dir = "data"', 'data_dir = "/dev/null/baton"'),
      files: { 'handlers/ping.ts': GOOD_HANDLER },
    });
    const result = await runBaton(['-c', project.configPath, 'run']);
    expect(result.code).toBe(4);
    expect(result.stderr).toContain('/dev/null/baton');
  });

  it('print-config hides the http token', async () => {
    const token = 'very-secret-token-4242';
    const other = 'another-secret-token-77';
    const project = await tempProject({
      toml: `[http]\ntoken = "${token}"\n\n[[http.tokens]]\ntoken = "${other}"\n`,
    });
    for (const format of [[], ['--json']]) {
      const result = await runBaton(['-c', project.configPath, 'print-config', ...format]);
      expect(result.code).toBe(0);
      expect(result.stdout).not.toContain(token);
      expect(result.stderr).not.toContain(token);
      expect(result.stdout).not.toContain(other);
      const printed = (format.length === 0 ? parse(result.stdout) : JSON.parse(result.stdout)) as {
        http: { token: unknown; tokens: Array<{ token: unknown }> };
      };
      expect(printed.http.token).toBe('***');
      expect(printed.http.tokens).toEqual([{ token: '***', scopes: ['admin', 'read', 'write', 'metrics'] }]);
    }
  });
});
