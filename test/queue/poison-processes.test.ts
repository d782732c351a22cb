// A record that kills or freezes its node process ends in the error queue instead of killing it forever,
// on the inline path (records sent over HTTP, processed within the request) and on the queue path. The
// test plays the supervisor: it starts the node again each time it dies, while a producer keeps sending
// (and sends again what a stopped node refused). Each crash is one structured log line.
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import type { BatonNodeProcess, RunResult, TempProject } from '../support/process.js';
import {
  cleanupAll,
  freePort,
  sqlOverHttp,
  startBatonNode,
  tempProject,
  within,
} from '../support/process.js';

afterEach(cleanupAll);

const HANDLER = fileURLToPath(new URL('../fixtures/poison-handler.ts', import.meta.url));
const MAX_ATTEMPTS = 2;
const TIMEOUT_MS = 1_000;
/** Node starts allowed before the poison record must be in the error queue. */
const MAX_STARTS = 8;

type Path = 'inline' | 'queue';
type Outcome = 'accepted' | 'refused' | 'unknown';

async function poisonProject(path: Path): Promise<TempProject> {
  return tempProject({
    toml: {
      node: { name: 'poison-test', data_dir: 'data' },
      http: { port: await freePort() },
      queues: {
        p: {
          handler: HANDLER,
          inline: path === 'inline',
          max_attempts: MAX_ATTEMPTS,
          timeout_ms: TIMEOUT_MS,
          retry_delay_ms: 50,
        },
      },
    },
  });
}

/** Sends NDJSON lines: accepted (202), refused (nothing reached the node), or unknown (cut off midway). */
async function send(url: string, lines: readonly string[]): Promise<Outcome> {
  try {
    const response = await fetch(`${url}/v1/queues/p/records`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' },
      body: `${lines.join('\n')}\n`,
      signal: AbortSignal.timeout(30_000),
    });
    await response.body?.cancel();
    if (response.status === 202) return 'accepted';
    if (response.status === 503) return 'refused';
    throw new Error(`ingest answered ${response.status}`);
  } catch (error) {
    const code = (error as { cause?: { code?: string } }).cause?.code;
    return code === 'ECONNREFUSED' ? 'refused' : 'unknown';
  }
}

/**
 * A producer of good records ({"id": n}, 5 a request) that sends again what was refused, until stopped.
 * Records of requests cut off midway are `unknown`: stored at most once, never sent again.
 */
function producer(url: () => string | undefined): {
  stop(): Promise<{ accepted: number[]; unknown: number[] }>;
} {
  const accepted: number[] = [];
  const unknown: number[] = [];
  let running = true;
  let next = 1;
  const loop = (async () => {
    let pending: number[] | undefined;
    while (running) {
      const target = url();
      const ids = pending ?? [next++, next++, next++, next++, next++];
      const outcome = target
        ? await send(
            target,
            ids.map((id) => JSON.stringify({ id })),
          )
        : 'refused';
      pending = undefined;
      if (outcome === 'accepted') accepted.push(...ids);
      else if (outcome === 'unknown') unknown.push(...ids);
      else pending = ids;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { accepted, unknown };
    },
  };
}

/** Starts the node; or how it exited when it died before it was ready (the poison record may run at start). */
async function tryStart(project: TempProject): Promise<BatonNodeProcess | RunResult> {
  try {
    return await startBatonNode(project.configPath, { readyTimeoutMs: 180_000 });
  } catch (error) {
    const died = /exited before it was ready \(code (\S+), signal (\S+)\)\n--- stderr\n([\s\S]*)$/.exec(
      String((error as Error).message),
    );
    if (!died) throw error;
    const [, code, signal, stderr] = died;
    return {
      code: code === 'null' ? null : Number(code),
      signal: signal === 'null' ? null : (signal as NodeJS.Signals),
      stdout: '',
      stderr: stderr ?? '',
    };
  }
}

function isNode(started: BatonNodeProcess | RunResult): started is BatonNodeProcess {
  return 'pid' in started;
}

async function errorQueue(
  url: string,
): Promise<Array<{ payload_text?: string; error: string; attempts: number }>> {
  const response = await fetch(`${url}/v1/queues/p/errors`, { signal: AbortSignal.timeout(10_000) });
  const body = (await response.json()) as {
    errors: Array<{ payload_text?: string; error: string; attempts: number }>;
  };
  return body.errors;
}

/** The JSON log lines of a node's stderr whose level is fatal (60). */
function fatalLines(stderr: string): Array<Record<string, unknown>> {
  return stderr
    .split('\n')
    .filter((line) => line.startsWith('{') && line.includes('"level":60'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/**
 * Sends the poison request [id 100000, poison, id 100001] once, then restarts the node each time it dies
 * until the poison record is in the error queue. Returns each death, the last node, and what the producer
 * had accepted.
 */
async function untilQuarantined(project: TempProject, path: Path, poison: string) {
  const first = await tryStart(project);
  if (!isNode(first)) throw new Error(`the node did not start: ${first.stderr}`);
  let node: BatonNodeProcess | undefined = first;
  let current: BatonNodeProcess | undefined = node;
  const feed = producer(() => current?.url);
  const poisonLines = [{ id: 100_000 }, { poison }, { id: 100_001 }].map((line) => JSON.stringify(line));
  const sent = await send(first.url, poisonLines);
  // Inline, the request dies with its node; on the queue path it is accepted and the runner dies later.
  expect(sent).toBe(path === 'inline' ? 'unknown' : 'accepted');
  const deaths: RunResult[] = [];
  let quarantined: Awaited<ReturnType<typeof errorQueue>> = [];
  for (let starts = 1; ;) {
    if (node) {
      const alive = node;
      let watching = true;
      const exited = await within(
        Promise.race([
          alive.waitExit(),
          (async () => {
            while (watching) {
              const errors = await errorQueue(alive.url).catch(() => []);
              if (errors.length > 0) return errors;
              await new Promise((resolve) => setTimeout(resolve, 200));
            }
            return [];
          })(),
        ]),
        120_000,
        'a crash or the error queue',
      ).finally(() => (watching = false));
      if (!('code' in exited)) {
        quarantined = exited;
        break;
      }
      current = undefined;
      deaths.push(exited);
    }
    expect(starts, 'node starts before the poison record reached the error queue').toBeLessThan(MAX_STARTS);
    starts += 1;
    const started = await tryStart(project);
    node = isNode(started) ? started : undefined;
    if (!isNode(started)) deaths.push(started);
    current = node;
  }
  // The rest flows: more good records after the quarantine.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const produced = await feed.stop();
  return { node, deaths, quarantined, produced };
}

/** Every accepted id and the poison request's good ids stored exactly once; unknown ones at most once. */
async function expectStoredOnce(
  node: BatonNodeProcess,
  produced: { accepted: number[]; unknown: number[] },
): Promise<void> {
  const counts = async (): Promise<Map<number, number>> => {
    const rows = await sqlOverHttp(node.url, 'SELECT id, count(*)::int AS n FROM poison_seen GROUP BY id');
    return new Map(rows.map((row) => [Number(row['id']), Number(row['n'])]));
  };
  const must = [...produced.accepted, 100_000, 100_001];
  let stored = await counts();
  for (let tries = 0; must.some((id) => stored.get(id) !== 1) && tries < 100; tries++) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    stored = await counts();
  }
  expect(must.filter((id) => stored.get(id) !== 1)).toEqual([]);
  expect(produced.unknown.filter((id) => (stored.get(id) ?? 0) > 1)).toEqual([]);
  expect([...stored.values()].every((n) => n === 1)).toBe(true);
  expect(produced.accepted.length).toBeGreaterThan(0);
}

describe.each(['inline', 'queue'] as const)('a record that kills its node, on the %s path', (path) => {
  const kinds = path === 'inline' ? (['throw', 'exit', 'abort'] as const) : (['reject'] as const);
  it.each(kinds)(
    'ends in the error queue with its reason when it crashes the process (%s); the rest is stored once',
    async (kind) => {
      const project = await poisonProject(path);
      const { node, deaths, quarantined, produced } = await untilQuarantined(project, path, kind);
      expect(quarantined).toHaveLength(1);
      expect(quarantined[0]?.payload_text).toBe(JSON.stringify({ poison: kind }));
      expect(quarantined[0]?.error).toMatch(/node stopped while processing it: crashed, killed/);
      expect(quarantined[0]?.attempts).toBe(MAX_ATTEMPTS);
      expect(deaths.length).toBeGreaterThanOrEqual(MAX_ATTEMPTS);
      for (const death of deaths.filter((d) => d.stderr !== '')) {
        // One structured line, never the handler's source.
        expect(death.stderr).not.toContain('INSERT INTO poison_seen');
        expect(death.stderr).not.toContain('async function');
        if (kind === 'abort') continue;
        const [line, ...more] = fatalLines(death.stderr);
        expect(more).toEqual([]);
        const handlers = line?.['handlers'] as Array<{ queue: string; count: number }>;
        expect(handlers.map((call) => call.queue)).toEqual(['p']);
        expect(handlers[0]?.count).toBeGreaterThan(0);
        if (kind === 'exit') {
          expect(death.code).toBe(7);
          expect(line?.['msg']).toContain('exiting with code 7');
        } else {
          expect(death.code).toBe(1);
          expect(line?.['error']).toMatchObject({ name: kind === 'throw' ? 'Error' : 'RangeError' });
          expect(String((line?.['error'] as { stack?: string }).stack)).toContain('poison-handler.ts');
        }
      }
      if (node) await expectStoredOnce(node, produced);
    },
    400_000,
  );

  it('ends in the error queue when it blocks the event loop; the watchdog kills the node with one log line', async () => {
    const project = await poisonProject(path);
    const { node, deaths, quarantined, produced } = await untilQuarantined(project, path, 'loop');
    expect(quarantined).toHaveLength(1);
    expect(quarantined[0]?.payload_text).toBe(JSON.stringify({ poison: 'loop' }));
    expect(quarantined[0]?.error).toMatch(/ended by the watchdog/);
    const killed = deaths.filter((death) => death.signal === 'SIGKILL');
    expect(killed.length).toBeGreaterThanOrEqual(MAX_ATTEMPTS);
    for (const death of killed) {
      const lines = fatalLines(death.stderr);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ queue: 'p', timeoutMs: TIMEOUT_MS });
      expect(lines[0]?.['blockedMs']).toBeGreaterThanOrEqual(1_000);
      expect(lines[0]?.['count']).toBeGreaterThan(0);
      expect(String(lines[0]?.['msg'])).toContain('watchdog');
    }
    if (node) await expectStoredOnce(node, produced);
  }, 400_000);
});
