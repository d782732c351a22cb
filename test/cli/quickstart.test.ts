// The quickstart, end to end through the built `baton` command: publish with no node running, start a node,
// and use the CLI (which then goes through the node's HTTP API) and the HTTP API itself. Each test runs on a
// copy of examples/quickstart/baton.toml with its own data dir and port.
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

import { parse } from 'smol-toml';
import { afterEach, describe, expect, it, vi } from 'vitest';

import type { RunOptions, TempProject } from '../support/process.js';
import { cleanupAll, freePort, runBaton, startBatonNode, tempProject } from '../support/process.js';

afterEach(cleanupAll);

const QUICKSTART_CONFIG = fileURLToPath(new URL('../../examples/quickstart/baton.toml', import.meta.url));
const PING_HANDLER = fileURLToPath(new URL('../../examples/quickstart/handlers/ping.ts', import.meta.url));

const BODY_LIMIT = 4096;
const MAX_ATTEMPTS = 2;
const WAIT = { timeout: 20_000, interval: 200 };

type Table = Record<string, unknown>;

/** The quickstart config, with its own data dir and port, fast retries, and `http` merged into [http]. */
async function quickstartProject(http: Table = {}): Promise<TempProject> {
  const raw = parse(await readFile(QUICKSTART_CONFIG, 'utf8')) as {
    node: Table;
    http: Table;
    queues: { ping: Table };
  };
  raw.node['data_dir'] = 'data';
  raw.http = { ...raw.http, port: await freePort(), body_limit_bytes: BODY_LIMIT, ...http };
  raw.queues.ping['handler'] = PING_HANDLER;
  raw.queues.ping['max_attempts'] = MAX_ATTEMPTS;
  raw.queues.ping['retry_delay_ms'] = 50;
  return tempProject({ toml: raw });
}

function cli(project: TempProject) {
  return (args: readonly string[], options: RunOptions = {}) =>
    runBaton(['-c', project.configPath, ...args], { cwd: project.dir, ...options });
}

function ping(name: string): string {
  return JSON.stringify({ name, timestamp: '2024-05-01T12:00:00Z' });
}

interface QueuesJson {
  queues: Array<Record<string, unknown>>;
}

interface ErrorsJson {
  queue: string;
  error_queue: string;
  errors: Array<{
    id: string;
    attempts: number;
    error: string;
    payload_base64: string;
    payload_text: string | null;
  }>;
}

describe('quickstart', () => {
  it('publishes offline, processes once the node runs, and manages the error queue', async () => {
    const project = await quickstartProject();
    const baton = cli(project);

    // No node running: the CLI opens the store itself and only queues the records.
    const one = await baton(['publish', 'ping', ping('first')]);
    expect(one.stderr).toBe('');
    expect(one.code).toBe(0);
    expect(one.stdout).toContain('accepted 1 record ');
    const three = await baton(['publish', 'ping', '-'], {
      input: `${ping('second')}\nnot json\n${ping('third')}\n`,
    });
    expect(three.code).toBe(0);
    expect(three.stdout).toContain('accepted 3 records ');

    const node = await startBatonNode(project.configPath);

    // The store is the node's now: `sql` goes through its HTTP API.
    await vi.waitFor(async () => {
      const count = await baton(['sql', 'select count(*) from ping']);
      expect(count.code).toBe(0);
      expect(count.stdout.trim()).toBe('3');
    }, WAIT);

    // The bad record is retried, then lands in errors-ping with the reason.
    const errors = await vi.waitFor(async () => {
      const listed = await baton(['errors', 'ping', '--json']);
      expect(listed.code).toBe(0);
      const parsed = JSON.parse(listed.stdout) as ErrorsJson;
      expect(parsed.errors).toHaveLength(1);
      return parsed;
    }, WAIT);
    expect(errors.queue).toBe('ping');
    expect(errors.error_queue).toBe('errors-ping');
    const [bad] = errors.errors;
    expect(Buffer.from(bad?.payload_base64 ?? '', 'base64').toString('utf8')).toBe('not json');
    expect(bad?.payload_text).toBe('not json');
    expect(bad?.attempts).toBe(MAX_ATTEMPTS);
    expect(bad?.error).toContain('JSON');

    const table = await baton(['errors', 'ping']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(
      new RegExp(`^${bad?.id}\\s+${MAX_ATTEMPTS}\\s+\\S+\\s+.*JSON.*not json\\s*$`, 'm'),
    );

    // The plugin subcommands of the quickstart handler, through the node.
    const count = await baton(['ping', 'count']);
    expect(count.code).toBe(0);
    expect(count.stdout.trim()).toBe('3');
    const help = await baton(['ping', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^\s+count\b.*stored/m);

    const queues = await baton(['queues', '--json']);
    expect(queues.code).toBe(0);
    const [queue] = (JSON.parse(queues.stdout) as QueuesJson).queues;
    expect(queue).toMatchObject({ name: 'ping', depth: 0, processed: 3, failed: MAX_ATTEMPTS, errors: 1 });

    // Replayed, the record fails again and comes back with its attempts counted afresh.
    const replay = await baton(['replay-errors', 'ping']);
    expect(replay.code).toBe(0);
    expect(replay.stdout).toContain('replayed 1 record ');
    await vi.waitFor(async () => {
      const listed = JSON.parse((await baton(['errors', 'ping', '--json'])).stdout) as ErrorsJson;
      // A new error record: the replay removed the old one.
      expect(listed.errors).toHaveLength(1);
      expect(listed.errors[0]?.id).not.toBe(bad?.id);
      expect(listed.errors[0]?.attempts).toBe(MAX_ATTEMPTS);
    }, WAIT);

    // HTTP ingest.
    const records = `${node.url}/v1/queues/ping/records`;
    const accepted = await fetch(records, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' },
      body: `${ping('http-1')}\n${ping('http-2')}\n`,
    });
    expect(accepted.status).toBe(202);
    expect(await accepted.json()).toEqual({ accepted: 2 });
    await vi.waitFor(async () => {
      expect((await baton(['sql', 'select count(*) from ping'])).stdout.trim()).toBe('5');
    }, WAIT);

    const unknown = await fetch(`${node.url}/v1/queues/nope/records`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' },
      body: `${ping('lost')}\n`,
    });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ code: 'UNKNOWN_QUEUE', queues: ['ping'] });

    const tooLarge = await fetch(records, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' },
      body: `${ping('x'.repeat(BODY_LIMIT))}\n`,
    });
    expect(tooLarge.status).toBe(413);
    await tooLarge.body?.cancel();

    const empty = await fetch(records, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' },
    });
    expect(empty.status).toBe(400);
    expect(await empty.json()).toMatchObject({ code: 'BAD_REQUEST' });

    // Rejected requests stored nothing.
    expect((await baton(['sql', 'select count(*) from ping'])).stdout.trim()).toBe('5');

    const exit = await node.stop('SIGTERM');
    expect(exit.code).toBe(0);
    expect(existsSync(project.path('data/baton.lock'))).toBe(false);
  }, 240_000); // a dozen commands, each opening the embedded store: slow on a loaded machine

  it('queues --json reports depth, in_flight, processed, failed and errors, with and without a node', async () => {
    // The field names are those of GET /v1/queues. Soft assertions: every difference is reported at once.
    const project = await quickstartProject();
    const baton = cli(project);
    const fields = ['name', 'depth', 'in_flight', 'processed', 'failed', 'errors'];

    expect((await baton(['publish', 'ping', ping('one')])).code).toBe(0);
    const offline = await baton(['queues', '--json']);
    expect(offline.code).toBe(0);
    const [before] = (JSON.parse(offline.stdout) as QueuesJson).queues;
    expect.soft(Object.keys(before ?? {})).toEqual(expect.arrayContaining(fields));
    // No node runs: what a node processed or failed is unknown, which is null rather than absent or zero.
    expect
      .soft(before)
      .toMatchObject({ name: 'ping', depth: 1, in_flight: 0, processed: null, failed: null, errors: 0 });

    const node = await startBatonNode(project.configPath);
    const online = await vi.waitFor(async () => {
      const result = await baton(['queues', '--json']);
      expect(result.code).toBe(0);
      const [queue] = (JSON.parse(result.stdout) as QueuesJson).queues;
      expect(queue).toMatchObject({ processed: 1 });
      return queue;
    }, WAIT);
    expect.soft(Object.keys(online ?? {})).toEqual(expect.arrayContaining(fields));
    expect
      .soft(online)
      .toMatchObject({ name: 'ping', depth: 0, in_flight: 0, processed: 1, failed: 0, errors: 0 });
    expect((await node.stop()).code).toBe(0);
  });

  it('with [http] token: requests need it, health probes do not, and the CLI uses the configured one', async () => {
    const token = 'quickstart-test-token-31337';
    const project = await quickstartProject({ token });
    const baton = cli(project);
    const node = await startBatonNode(project.configPath);
    const base = node.url;

    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    await health.body?.cancel();
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    await ready.body?.cancel();

    const anonymous = await fetch(`${base}/v1/queues`);
    expect(anonymous.status).toBe(401);
    await anonymous.body?.cancel();
    const wrong = await fetch(`${base}/v1/queues`, {
      headers: { authorization: 'Bearer not-the-token-000' },
    });
    expect(wrong.status).toBe(401);
    await wrong.body?.cancel();
    const ingestAnonymous = await fetch(`${base}/v1/queues/ping/records`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' },
      body: `${ping('anonymous')}\n`,
    });
    expect(ingestAnonymous.status).toBe(401);
    await ingestAnonymous.body?.cancel();
    const sqlAnonymous = await fetch(`${base}/v1/sql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sql: 'select 1' }),
    });
    expect(sqlAnonymous.status).toBe(401);
    await sqlAnonymous.body?.cancel();

    const ingest = await fetch(`${base}/v1/queues/ping/records`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson', authorization: `Bearer ${token}` },
      body: `${ping('with-token')}\n`,
    });
    expect(ingest.status).toBe(202);
    expect(await ingest.json()).toEqual({ accepted: 1 });

    // The CLI reads the token from the config it is given.
    const published = await baton(['publish', 'ping', ping('cli')]);
    expect(published.stderr).toBe('');
    expect(published.code).toBe(0);
    expect(published.stdout).toContain('accepted 1 record ');
    await vi.waitFor(async () => {
      const count = await baton(['sql', 'select count(*) from ping']);
      expect(count.code).toBe(0);
      expect(count.stdout.trim()).toBe('2');
    }, WAIT);
    const queues = await baton(['queues']);
    expect(queues.code).toBe(0);
    expect(queues.stdout).toMatch(/^ping\s+store\s/m);
    expect((await baton(['ping', 'count'])).stdout.trim()).toBe('2');
    const errors = await baton(['errors', 'ping']);
    expect(errors.code).toBe(0);
    expect(errors.stdout).toContain('errors-ping is empty');

    expect((await node.stop('SIGTERM')).code).toBe(0);
  });

  it('initdb with no node running creates the table ping', async () => {
    const project = await quickstartProject();
    const baton = cli(project);

    const before = await baton(['sql', 'select count(*) from ping']);
    expect(before.code).toBe(1);
    expect(before.stderr).toContain('"ping" does not exist');

    const initdb = await baton(['initdb']);
    expect(initdb.stderr).toBe('');
    expect(initdb.code).toBe(0);
    expect(initdb.stdout).toMatch(/^created .*\bping\b/m);

    const count = await baton(['sql', 'select count(*) from ping']);
    expect(count.code).toBe(0);
    expect(count.stdout.trim()).toBe('0');

    const again = await baton(['initdb']);
    expect(again.code).toBe(0);
    expect(again.stdout.trim()).toBe('all tables exist already');
    // The CLI released the store when done.
    expect(existsSync(project.path('data/baton.lock'))).toBe(false);
  });

  it('publish --file reads one record per line and shows plain progress lines when not on a terminal', async () => {
    const project = await quickstartProject();
    const baton = cli(project);
    const lines = Array.from({ length: 2500 }, (_, index) => ping(`file-${index}`));
    await writeFile(project.path('records.ndjson'), `${lines.join('\n')}\n`);

    const published = await baton(['publish', 'ping', '--file', project.path('records.ndjson')]);
    expect(published.code).toBe(0);
    expect(published.stdout).toContain('accepted 2500 records into queue "ping"');
    const progress = published.stderr.split('\n').filter((line) => line.startsWith('publishing (bytes): '));
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(published.stderr).not.toContain('\r');

    const both = await baton(['publish', 'ping', 'x', '--file', project.path('records.ndjson')]);
    expect(both.code).not.toBe(0);
    expect(both.stderr).toContain('not both');
    const missing = await baton(['publish', 'ping', '--file', project.path('nope.txt')]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain('cannot read');
  });
});
