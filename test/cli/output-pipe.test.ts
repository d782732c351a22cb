// Output of a size people pipe into `head`: a table of 200 000 rows prints (no call stack overflow), and a
// reader that goes away after three lines ends the output quietly: exit 0, no EPIPE on stderr.
import { afterEach, describe, expect, it } from 'vitest';

import { BATON_BIN, cleanupAll, runCommand, tempProject } from '../support/process.js';

afterEach(cleanupAll);

describe('baton sql | head', () => {
  it('prints a large table and exits 0 when the reader goes away', async () => {
    const project = await tempProject({
      toml: `[node]\ndata_dir = "data"\n\n[http]\nenabled = false\n\n[queues.q]\nhandler = "./handler.ts"\n`,
      files: { 'handler.ts': 'export function process() {}\n' },
    });
    const script =
      `"${process.execPath}" "${BATON_BIN}" -c "${project.configPath}" --log-format json ` +
      `sql "select generate_series(1, 200000) as n" | head -3; echo "exit=\${PIPESTATUS[0]}"`;
    const result = await runCommand('bash', ['-c', script], { cwd: project.dir, timeoutMs: 120_000 });
    expect(result.stdout.split('\n').slice(0, 3)).toEqual(['n', '------', '1']);
    expect(result.stdout).toContain('exit=0');
    expect(result.stderr).not.toMatch(/EPIPE|RangeError|call stack/);
  });
});
