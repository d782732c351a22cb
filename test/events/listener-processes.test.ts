// Listeners in other processes: under concurrent producers a listener gets every offset once and in order
// (embedded store and PostgreSQL), and a named listener killed with SIGKILL resumes after the last offset it
// stored, so that together its two lives miss nothing.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { NotificationClient, startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import { createTestDatabase } from '../support/postgres.js';
import type { TestDatabase } from '../support/postgres.js';
import { assertConsecutive, call, until } from './support.js';

const log = createLogger({ level: 'silent' });
const SCRIPT = fileURLToPath(new URL('./listener-process.ts', import.meta.url));

interface ListenerProcess {
  readonly child: ChildProcess;
  /** Offsets of each processed batch, in the order printed. */
  readonly batches: number[][];
  readonly stderr: () => string;
  readonly ready: Promise<void>;
}

const children = new Set<ChildProcess>();

function startListener(env: Record<string, string>): ListenerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', SCRIPT], {
    env: { PATH: process.env['PATH'] ?? '', NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const batches: number[][] = [];
  let stderr = '';
  let buffer = '';
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    child.once('exit', (code, signal) =>
      reject(new Error(`the listener exited (${String(code ?? signal)}) before it was ready:\n${stderr}`)),
    );
  });
  ready.catch(() => undefined);
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    buffer += text;
    let end: number;
    while ((end = buffer.indexOf('\n')) >= 0) {
      const line = JSON.parse(buffer.slice(0, end)) as { offsets?: number[]; ready?: boolean };
      buffer = buffer.slice(end + 1);
      if (line.ready) markReady();
      if (line.offsets) batches.push(line.offsets);
    }
  });
  return { child, batches, stderr: () => stderr, ready };
}

async function kill(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
}

afterEach(async () => {
  await Promise.all([...children].map((child) => kill(child, 'SIGKILL')));
  children.clear();
});

interface Started {
  node: BatonNode;
  dispose(): Promise<void>;
}

async function start(kind: 'embedded' | 'postgres'): Promise<Started> {
  const dir = await mkdtemp(join(tmpdir(), 'baton-listeners-'));
  const database: TestDatabase | undefined = kind === 'postgres' ? await createTestDatabase() : undefined;
  const node = await startNode(
    {
      node: { name: 'listeners-node', data_dir: dir, shutdown_timeout_ms: 5000 },
      http: { port: 0 },
      ...(database ? { store: { url: database.url, pool_size: 6 } } : {}),
    },
    { log },
  );
  return {
    node,
    async dispose() {
      await node.stop();
      await database?.drop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

describe.each(['embedded', 'postgres'] as const)('listeners in other processes (%s)', (kind) => {
  let started: Started;
  let base: string;

  beforeAll(async () => {
    started = await start(kind);
    base = started.node.address ?? '';
  });

  afterAll(async () => {
    await started.dispose();
  });

  it('get every offset once and in order while producers send concurrently', async () => {
    const namespace = 'concurrent';
    const listener = startListener({ BATON_URL: base, BATON_NAMESPACE: namespace, LISTEN_FROM: '0' });
    await listener.ready;
    const producers = Array.from(
      { length: 4 },
      (_, index) => new NotificationClient(base, { namespace, sender: `p${index}`, env: {}, log }),
    );
    const sent: number[] = [];
    await Promise.all(
      producers.map(async (producer, index) => {
        for (let round = 0; round < 30; round++) {
          // Single events and small batches, interleaved between producers.
          const events =
            round % 3 === 0
              ? [await producer.sendEvent('tick', `${index}:${round}`)]
              : await producer.sendEvents(
                  Array.from({ length: 1 + (round % 4) }, (_, n) => ({
                    key: n % 2 === 0 ? 'tick' : 'tock',
                    value: `${index}:${round}:${n}`,
                  })),
                );
          sent.push(...events.map((event) => event.offset));
        }
      }),
    );
    sent.sort((a, b) => a - b);
    await until(
      () => listener.batches.flat().length >= sent.length,
      30_000,
      `${sent.length} offsets in the listener`,
    );
    const received = listener.batches.flat();
    expect(received).toEqual(sent);
    // The namespace holds nothing else, so its offsets are the sent ones, and listed in the same order.
    const listed = await call(base, 'GET', `/v1/events?namespace=${namespace}&limit=10000`);
    expect((listed.body['events'] as Array<{ offset: number }>).map((event) => event.offset)).toEqual(sent);
    await Promise.all(producers.map((producer) => producer.close()));
  });

  it('resumes a named listener where it stopped after SIGKILL', async () => {
    const namespace = 'survivor';
    const producer = new NotificationClient(base, { namespace, env: {}, log });
    const env = {
      BATON_URL: base,
      BATON_NAMESPACE: namespace,
      LISTEN_NAME: 'survivor',
      LISTEN_FROM: '0',
      LISTEN_DELAY_MS: '30',
      LISTEN_KEYS: 'step',
    };
    const sent: number[] = [];
    let sending = true;
    const trickle = (async () => {
      for (let n = 0; sending && n < 2_000; n++) {
        sent.push((await producer.sendEvent('step', String(n))).offset);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();

    const first = startListener(env);
    await first.ready;
    await until(() => first.batches.length >= 6, 30_000, 'six processed batches');
    await kill(first.child, 'SIGKILL');
    const stored = await call(base, 'GET', `/v1/events/listeners/survivor?namespace=${namespace}`);
    const storedOffset = Number(stored.body['offset']);
    // The offset is stored after each batch, before the next one starts: at most the last printed batch is
    // not covered by it.
    const printed = first.batches;
    expect(storedOffset).toBeGreaterThanOrEqual(printed.at(-2)?.at(-1) ?? Infinity);
    expect(storedOffset).toBeLessThanOrEqual(printed.at(-1)?.at(-1) ?? 0);

    const second = startListener(env);
    await second.ready;
    await until(() => second.batches.length >= 3, 30_000, 'batches after the restart');
    sending = false;
    await trickle;
    const last = sent.at(-1) ?? 0;
    await until(
      () => (second.batches.at(-1)?.at(-1) ?? 0) >= last,
      30_000,
      `offset ${last} after the restart`,
    );
    await kill(second.child, 'SIGTERM');

    expect(second.batches[0]?.[0]).toBe(storedOffset + 1);
    const firstLife = printed.flat().filter((offset) => offset <= storedOffset);
    const together = [...firstLife, ...second.batches.flat()];
    assertConsecutive(together);
    expect(together).toEqual(sent.filter((offset) => offset >= (together[0] ?? 0)));
    expect(together[0]).toBe(sent[0]);
    await producer.close();
  });
});
