// The container image runs the node as PID 1 through the Dockerfile's exec-form ENTRYPOINT and CMD, so that
// `docker stop`'s SIGTERM reaches the node and it drains. This runs that exact argv on this machine, in a
// folder laid out as the image's /app (the package and its drizzle-orm peer in node_modules, the quickstart
// beside them), and sends SIGTERM. Where a Docker engine runs, scripts/check-container.sh builds the image and
// stops a container of it.
import { cp, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { readStoreLock } from '../../src/store/lock.js';
import {
  cleanupAll,
  freePort,
  REPO_ROOT,
  runBaton,
  startBatonNode,
  tempProject,
  within,
} from '../support/process.js';

afterEach(cleanupAll);

interface Image {
  workdir: string;
  entrypoint: string[];
  cmd: string[];
}

/** WORKDIR, ENTRYPOINT and CMD of the Dockerfile's last stage; ENTRYPOINT and CMD must be in exec form. */
async function readDockerfile(): Promise<Image> {
  const text = await readFile(join(REPO_ROOT, 'Dockerfile'), 'utf8');
  const lastStage = text.slice(text.lastIndexOf('\nFROM '));
  const instruction = (name: string): string => {
    const lines = lastStage.split('\n').filter((line) => line.startsWith(`${name} `));
    const line = lines.at(-1);
    if (line === undefined) throw new Error(`the Dockerfile's last stage has no ${name}`);
    return line.slice(name.length + 1).trim();
  };
  const execForm = (name: string): string[] => {
    const value: unknown = JSON.parse(instruction(name));
    if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) {
      throw new Error(`${name} is not in exec form (a JSON array of strings): a shell would get the signals`);
    }
    return value;
  };
  return { workdir: instruction('WORKDIR'), entrypoint: execForm('ENTRYPOINT'), cmd: execForm('CMD') };
}

/** Records the quickstart's handler accepts. */
function pings(n: number): string {
  const at = new Date('2026-01-01T00:00:00Z').toISOString();
  return Array.from({ length: n }, (_, i) => `${JSON.stringify({ name: `p${i}`, timestamp: at })}\n`).join(
    '',
  );
}

const TOKEN = 'container-entrypoint-test-token';

const COUNTS = `select
  (select count(*) from ping)::int as stored,
  (select count(*) from baton_queue_records where queue = 'ping' and claimed_by is null)::int as waiting,
  (select count(*) from baton_queue_records where queue = 'ping' and claimed_by is not null)::int as claimed`;

describe('the container entrypoint', () => {
  it('is node itself (exec form): SIGTERM drains, exits 0, frees the port and the owner lock', async () => {
    const image = await readDockerfile();
    expect(image.workdir).toBe('/app');
    expect(image.entrypoint[0]).toBe('node');
    const port = await freePort();
    // /app as the image lays it out; only the port differs from the quickstart's config.
    const app = await tempProject({ toml: '' });
    await mkdir(app.path('node_modules'));
    await symlink(REPO_ROOT, app.path('node_modules/baton-runtime'), 'dir');
    await symlink(join(REPO_ROOT, 'node_modules/drizzle-orm'), app.path('node_modules/drizzle-orm'), 'dir');
    await cp(join(REPO_ROOT, 'examples/quickstart'), app.dir, { recursive: true });
    const config = await readFile(app.configPath, 'utf8');
    expect(config).toContain('port = 8080');
    await writeFile(app.configPath, config.replace('port = 8080', `port = ${port}`));

    const node = await startBatonNode(app.configPath, {
      cwd: app.dir,
      command: [...image.entrypoint, ...image.cmd],
      // Listening on every address, the node needs a token; the image has none built in.
      env: { BATON_HTTP__TOKEN: TOKEN },
      readyTimeoutMs: 120_000,
    });
    const ingest = await fetch(`${node.url}/v1/queues/ping/records`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson', authorization: `Bearer ${TOKEN}` },
      body: pings(2000),
    });
    expect(ingest.status).toBe(202);

    const exit = await within(node.stop('SIGTERM'), 60_000, 'the entrypoint after SIGTERM');
    expect(exit.signal).toBeNull();
    expect(exit.code).toBe(0);
    expect(exit.stderr).toContain('SIGTERM: stopping (finishing in-flight batches)');
    expect(exit.stderr).not.toContain('aborting them');
    expect(exit.stderr).toContain('node quickstart stopped');
    expect(await readStoreLock(app.path('.baton'))).toBeUndefined();

    // Drained: nothing left claimed, every record stored or still waiting.
    const counts = await runBaton(['-c', app.configPath, 'sql', '--json', COUNTS], { timeoutMs: 60_000 });
    expect(counts.code).toBe(0);
    const [row] = (JSON.parse(counts.stdout) as { rows: Array<Record<string, number>> }).rows;
    expect(row?.['claimed']).toBe(0);
    expect((row?.['stored'] ?? 0) + (row?.['waiting'] ?? 0)).toBe(2000);
  }, 240_000);
});
