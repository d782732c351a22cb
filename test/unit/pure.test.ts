// Pure helpers: line splitting of raw bytes, back-off, migration statement splitting.
import { describe, expect, it } from 'vitest';

import { splitStatements } from '../../src/store/migrate.js';
import { backoffDelay, retrying } from '../../src/util/backoff.js';
import { lineNumbers, splitLines } from '../../src/util/lines.js';

describe('splitLines', () => {
  it('splits on LF and CRLF, skips blank lines, keeps bytes as they are', () => {
    const body = Buffer.concat([
      Buffer.from('a\r\n\nb\n'),
      Buffer.from([0xff, 0x00, 0x0a]),
      Buffer.from('last'),
    ]);
    expect(splitLines(body)).toEqual([
      Buffer.from('a'),
      Buffer.from('b'),
      Buffer.from([0xff, 0x00]),
      Buffer.from('last'),
    ]);
    // The line each of those came from, blank lines counted.
    expect(lineNumbers(body)).toEqual([1, 3, 4, 5]);
  });
  it('gives nothing for an empty or blank body', () => {
    expect(splitLines(Buffer.alloc(0))).toEqual([]);
    expect(splitLines(Buffer.from('\n\r\n\n'))).toEqual([]);
  });
});

describe('backoffDelay', () => {
  it('doubles from the initial delay up to the ceiling, within ±20 % jitter', () => {
    const options = { initialMs: 1000, maxMs: 32_000 };
    expect(backoffDelay(1, options, () => 0.5)).toBe(1000);
    expect(backoffDelay(2, options, () => 0.5)).toBe(2000);
    expect(backoffDelay(6, options, () => 0.5)).toBe(32_000);
    expect(backoffDelay(60, options, () => 0.5)).toBe(32_000);
    expect(backoffDelay(1, options, () => 0)).toBe(800);
    expect(backoffDelay(1, options, () => 1)).toBe(1200);
  });
});

describe('retrying', () => {
  const backoff = { initialMs: 1, maxMs: 2 };
  class Final extends Error {}

  it('runs until it succeeds, telling of each retry', async () => {
    let calls = 0;
    const retries: number[] = [];
    const value = await retrying(
      () => (++calls < 3 ? Promise.reject(new Error('not yet')) : Promise.resolve('done')),
      {
        backoff,
        signal: new AbortController().signal,
        final: (error) => error instanceof Final,
        onRetry: (_error, delay) => retries.push(delay),
      },
    );
    expect(value).toBe('done');
    expect(calls).toBe(3);
    expect(retries).toHaveLength(2);
  });

  it('throws a final failure at once, and any failure once the signal aborted', async () => {
    const options = { backoff, final: (error: unknown) => error instanceof Final, onRetry: () => undefined };
    await expect(
      retrying(() => Promise.reject(new Final('over')), { ...options, signal: new AbortController().signal }),
    ).rejects.toBeInstanceOf(Final);
    const aborted = new AbortController();
    aborted.abort();
    await expect(
      retrying(() => Promise.reject(new Error('down')), { ...options, signal: aborted.signal }),
    ).rejects.toThrow('down');
  });
});

describe('splitStatements', () => {
  it('splits on semicolons at line ends and drizzle-kit breakpoints, dropping comments before statements', () => {
    const text =
      '-- header\n\n-- more\nCREATE TABLE a (x text);\nCREATE INDEX i ON a (x);--> statement-breakpoint\nSELECT 1;\n-- trailer\n';
    expect(splitStatements(text)).toEqual(['CREATE TABLE a (x text)', 'CREATE INDEX i ON a (x)', 'SELECT 1']);
  });

  it('keeps a dollar-quoted body whole, whatever its lines end with', () => {
    const text =
      'CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  -- a comment with $ signs;\n  PERFORM 1;\n  RETURN 2;\nEND $$;\n' +
      'CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $body$ SELECT $$x;$$ $body$;\nSELECT 3;\n';
    expect(splitStatements(text)).toEqual([
      'CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  -- a comment with $ signs;\n  PERFORM 1;\n  RETURN 2;\nEND $$',
      'CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $body$ SELECT $$x;$$ $body$',
      'SELECT 3',
    ]);
  });
});
