// A CLI command issued while the node that owns the embedded store is still starting (it holds the lock,
// its HTTP API does not listen yet) waits for it instead of failing; and a node started while a CLI command
// has the store open waits for the command to finish.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

afterEach(cleanupAll);

describe('a command while the node is starting', () => {
  it('waits for the node and goes through it', async () => {
    const project = await tempProject({
      toml:
        `[node]\ndata_dir = "data"\n[log]\nlevel = "warn"\n[http]\nport = ${await freePort()}\n` +
        `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\n`,
    });
    const starting = startBatonNode(project.configPath);
    // Give the node a moment to take the lock, not to finish starting.
    for (let tries = 0; tries < 100; tries++) {
      if (existsSync(project.path('data/baton.lock'))) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const published = await runBaton(['-c', project.configPath, 'publish', 'ids', '{"id":1}']);
    expect(published.stdout).toContain('accepted 1 record');
    expect(published.code).toBe(0);
    const node = await starting;
    const count = await runBaton(['-c', project.configPath, 'sql', 'SELECT count(*) FROM seen']);
    expect(count.stdout.trim()).toBe('1');
    await node.stop();
  }, 60_000);

  it('a node waits for a command that has the store open, then starts', async () => {
    const project = await tempProject({
      toml:
        `[node]\ndata_dir = "data"\n[log]\nlevel = "warn"\n[http]\nport = ${await freePort()}\n` +
        `[queues.ids]\nhandler = "${join(FIXTURES_DIR, 'ids-handler.ts')}"\n`,
    });
    // A command that holds the store for a few seconds (no node runs, so it opens the store itself).
    const holding = runBaton(['-c', project.configPath, 'sql', 'SELECT pg_sleep(6)']);
    for (let tries = 0; tries < 250; tries++) {
      if (existsSync(project.path('data/baton.lock'))) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(existsSync(project.path('data/baton.lock'))).toBe(true);
    const node = await startBatonNode(project.configPath);
    expect((await holding).code).toBe(0);
    const published = await runBaton(['-c', project.configPath, 'publish', 'ids', '{"id":2}']);
    expect(published.code).toBe(0);
    await node.stop();
  }, 90_000);
});
