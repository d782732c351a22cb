// A TypeScript handler beside baton.toml (`handler = "./handlers/ping.ts"`, as the docs show) loads whether
// or not the folder has a package.json saying "type": "module".
import { afterEach, describe, expect, it } from 'vitest';

import { cleanupAll, freePort, runBaton, tempProject } from '../support/process.js';

afterEach(cleanupAll);

describe('handler loading', () => {
  it('loads an ES module TypeScript handler from a folder without package.json', async () => {
    const project = await tempProject({
      toml: `[node]\ndata_dir = "data"\n\n[http]\nport = ${await freePort()}\n\n[queues.q]\nhandler = "./handlers/q.ts"\n`,
      files: { 'handlers/q.ts': 'export function process(): void {}\n' },
      esmPackage: false,
    });
    // initdb loads every handler, and needs no node.
    const result = await runBaton(['-c', project.configPath, 'initdb'], { cwd: project.dir });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe('all tables exist already');
  });
});
