// What a handler's `ctx.log` is bound to (its queue, batch and record), and where a failing record's stack
// goes: a debug line with the error itself, while the warn line of logFailures keeps the message.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { resolveConfig } from '../../src/config/load.js';
import { loadHandler } from '../../src/handler/load.js';
import { logFailures, REASON_LOGGED, RecordProcessor } from '../../src/queue/processor.js';
import type { TempStore } from '../support/pglite.js';
import { openTempStore } from '../support/pglite.js';

let temp: TempStore;
let dir: string;

beforeAll(async () => {
  temp = await openTempStore();
  dir = await mkdtemp(join(tmpdir(), 'baton-handler-log-'));
});
afterAll(async () => {
  await temp.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** A logger at debug level whose lines are collected, parsed. */
function collectingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

async function processorFor(source: string, file: string) {
  const path = join(dir, file);
  await writeFile(path, source);
  const handler = await loadHandler('q', path);
  const queue = resolveConfig({ queues: { q: { handler: path } } }, { baseDir: dir, env: {} }).queues['q']!;
  const { log, lines } = collectingLogger();
  const processor = new RecordProcessor({ queue, handler, log, abort: new AbortController().signal });
  return { processor, lines };
}

const records = ['a', 'bad', 'c'].map((text) => Buffer.from(text));
const claim = { batch: 'batch-1', ids: ['r1', 'r2', 'r3'] };

describe('a handler’s log', () => {
  it('names the queue, the batch and the record for process()', async () => {
    const { processor, lines } = await processorFor(
      `export function process(tx, record, ctx) { ctx.log.info('saw ' + record.toString()); }\n`,
      'one.mjs',
    );
    await temp.store.transaction((tx) => processor.run(tx, records, { claim }));
    const seen = lines.filter((line) => String(line['msg']).startsWith('saw '));
    expect(seen.map((line) => [line['msg'], line['queue'], line['batch'], line['record']])).toEqual([
      ['saw a', 'q', 'batch-1', 'r1'],
      ['saw bad', 'q', 'batch-1', 'r2'],
      ['saw c', 'q', 'batch-1', 'r3'],
    ]);
  });

  it('names the queue and the batch for processBatch(), and the record for a batch of one', async () => {
    const { processor, lines } = await processorFor(
      `export function processBatch(tx, records, ctx) { ctx.log.info('saw ' + records.length); }\n`,
      'batch.mjs',
    );
    await temp.store.transaction((tx) => processor.run(tx, records, { claim }));
    await temp.store.transaction((tx) =>
      processor.run(tx, [Buffer.from('x')], { claim: { batch: 'batch-2', ids: ['r9'] } }),
    );
    const seen = lines.filter((line) => String(line['msg']).startsWith('saw '));
    expect(seen.map((line) => [line['msg'], line['queue'], line['batch'], line['record']])).toEqual([
      ['saw 3', 'q', 'batch-1', undefined],
      ['saw 1', 'q', 'batch-2', 'r9'],
    ]);
  });

  it('is bound to the queue alone when no claim is known', async () => {
    const { processor, lines } = await processorFor(
      `export function process(tx, record, ctx) { ctx.log.info('saw ' + record.toString()); }\n`,
      'bare.mjs',
    );
    await temp.store.transaction((tx) => processor.run(tx, [Buffer.from('a')]));
    const seen = lines.find((line) => line['msg'] === 'saw a');
    expect(seen?.['queue']).toBe('q');
    expect(seen).not.toHaveProperty('batch');
  });
});

describe('a failing record', () => {
  it('has its stack in a debug line, named by batch and record', async () => {
    const { processor, lines } = await processorFor(
      `export function process(tx, record) {\n` +
        `  if (record.toString() === 'bad') throw new Error('no bad records here');\n}\n`,
      'failing.mjs',
    );
    const outcome = await temp.store.transaction((tx) => processor.run(tx, records, { claim }));
    expect(outcome.failed.map((failure) => failure.index)).toEqual([1]);
    expect(outcome.failed[0]?.error).not.toContain('failing.mjs');
    const debug = lines.filter((line) => line['level'] === 20 && line['record'] === 'r2');
    expect(debug).toHaveLength(1);
    const err = debug[0]?.['err'] as { message: string; stack: string };
    expect(err.message).toBe('no bad records here');
    expect(err.stack).toContain('failing.mjs');
    expect(debug[0]?.['batch']).toBe('batch-1');
  });

  it('is logged in a bounded line: its reason cut, its record not quoted', () => {
    const { log, lines } = collectingLogger();
    const payload = 'x'.repeat(50_000);
    const reason = `SyntaxError: Unexpected token in JSON: ${payload}`;
    const failure = (id: string, attempts: number) => ({
      record: { id, position: 0, attempts, payload: Buffer.from(payload), enqueuedAt: new Date() },
      error: reason,
      retryAt: undefined,
    });
    logFailures(log, 'q', [failure('r1', 0), failure('r2', 4)], new Map([['r2', '17']]));
    expect(lines).toHaveLength(2);
    for (const line of lines) {
      expect(JSON.stringify(line).length).toBeLessThan(REASON_LOGGED + 400);
      expect(line['err']).toBe(
        `${reason.slice(0, REASON_LOGGED)}… (${reason.length - REASON_LOGGED} more characters)`,
      );
    }
    expect(lines.map((line) => line['msg'])).toEqual([
      'queue "q": record r1 failed (attempt 1); retried after a back-off',
      'queue "q": record 17 moved to the error queue errors-q',
    ]);
  });
});
