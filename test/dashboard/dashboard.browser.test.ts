// The dashboard in a real browser: Debian's Chromium driven by playwright-core opens the page of a running
// node that asks for a token, signs in, sees records published over HTTP move the counters, replays an
// error record from the page, sees an event and the task run it started, and saves a screenshot
// (test-results/dashboard.png).
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import { launchChromium } from '../support/chromium.js';

const handler = fileURLToPath(new URL('../fixtures/gate-handler.ts', import.meta.url));
const artifacts = fileURLToPath(new URL('../../test-results/', import.meta.url));
const TOKEN = 'dashboard-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };

let dir: string;
let node: BatonNode;
let browser: Browser;
let page: Page;

const count = async (table: string, where = ''): Promise<number> =>
  Number((await node.admin.sql(`SELECT count(*)::int AS n FROM ${table} ${where}`)).rows[0]?.['n']);

async function publish(words: readonly string[]): Promise<void> {
  const response = await fetch(`${node.address}/v1/queues/gate/records`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/x-ndjson' },
    body: words.join('\n'),
  });
  expect(response.status).toBe(202);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-dashboard-'));
  node = await startNode(
    {
      node: { name: 'dash-node', data_dir: dir, shutdown_timeout_ms: 5000 },
      http: { port: 0, token: TOKEN },
      queues: {
        gate: { handler, max_attempts: 2, retry_delay_ms: 20, retry_max_delay_ms: 20, inline: false },
      },
      tasks: { hello: { command: 'true', namespace: 'ops' } },
      rules: [{ on: { namespace: 'ops', key: 'dash.go' }, action: 'start', task: 'hello' }],
      schedules: { beat: { every: '1s', event: { key: 'beat' } } },
    },
    { log: createLogger({ level: 'silent' }) },
  );
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
});

afterAll(async () => {
  await browser?.close();
  await node?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('the dashboard in Chromium', () => {
  it('shows the node live, moves the counters, and replays an error record from the page', async () => {
    const pageErrors: string[] = [];
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(`${node.address}/`);
    // The node asks for a token: a wrong one is refused on the page, the right one opens a session.
    await page.locator('#login').waitFor({ state: 'visible' });
    await page.fill('#login-token', 'not-the-token');
    await page.click('#login-form button[type=submit]');
    await expect.poll(() => page.textContent('#login-error')).toContain('invalid token');
    await page.fill('#login-token', TOKEN);
    await page.click('#login-form button[type=submit]');
    await expect.poll(() => page.textContent('[data-testid=role]')).toBe('not-in-group');
    await expect.poll(() => page.textContent('[data-testid=link]')).toBe('live');
    await expect.poll(() => page.textContent('[data-testid=queues] tr[data-queue=gate]')).toContain('gate');

    // One word is refused for now: it fails twice and lands in the error queue.
    await node.admin.sql(`INSERT INTO gate_refused (word) VALUES ('later')`);
    await publish(['alpha', 'beta', 'gamma', 'later', 'delta']);
    const processedCell = '[data-testid=queues] tr[data-queue=gate] td:nth-child(6)';
    await expect.poll(() => page.textContent(processedCell), { timeout: 15_000 }).toBe('4');
    // A record delayed by an hour shows beside the depth, in the delayed column.
    await node.publish('gate', [Buffer.from('an-hour-later')], { delayMs: 3_600_000 });
    const delayedCell = '[data-testid=queues] tr[data-queue=gate] td:nth-child(4)';
    await expect.poll(() => page.textContent(delayedCell), { timeout: 15_000 }).toBe('1');
    const errorRow = page.locator('[data-testid=errors] tbody tr[data-id]');
    await expect.poll(() => errorRow.count(), { timeout: 15_000 }).toBe(1);
    expect(await errorRow.textContent()).toContain('the word "later" is refused for now');
    expect(await errorRow.textContent()).toContain('later');

    // Let the word through, then replay it from the page.
    await node.admin.sql(`DELETE FROM gate_refused`);
    await errorRow.locator('button[data-action=replay]').click();
    await expect.poll(() => count('gate_words', `WHERE word = 'later'`), { timeout: 15_000 }).toBe(1);
    await expect.poll(() => errorRow.count(), { timeout: 15_000 }).toBe(0);
    await expect.poll(() => page.textContent(processedCell), { timeout: 15_000 }).toBe('5');

    // Another refused word: dropped from the page for good.
    await node.admin.sql(`INSERT INTO gate_refused (word) VALUES ('never')`);
    await publish(['never']);
    await expect.poll(() => errorRow.count(), { timeout: 15_000 }).toBe(1);
    await errorRow.locator('button[data-action=drop]').click();
    await expect.poll(() => errorRow.count(), { timeout: 15_000 }).toBe(0);
    expect((await node.admin.queues())[0]?.errors).toBe(0);
    expect(await count('gate_words', `WHERE word = 'never'`)).toBe(0);

    // More records: the throughput plot gets a line.
    await publish(Array.from({ length: 200 }, (_, index) => `w${index}`));
    await expect.poll(() => page.textContent(processedCell), { timeout: 15_000 }).toBe('205');
    expect(await page.locator('[data-testid=throughput] polyline').count()).toBe(1);

    // An event in the namespace "ops" shows up in the event panel and starts the task "hello".
    await page.fill('#event-filter input[name=namespace]', 'ops');
    await page.click('#event-filter button[type=submit]');
    const sent = await fetch(`${node.address}/v1/events`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ namespace: 'ops', key: 'dash.go', value: 'from the test' }),
    });
    expect(sent.status).toBe(201);
    await expect
      .poll(() => page.textContent('[data-testid=events] tbody'), { timeout: 15_000 })
      .toContain('dash.go');
    await expect
      .poll(() => page.textContent('[data-testid=tasks] tbody'), { timeout: 20_000 })
      .toMatch(/hello\s*succeeded/);

    // The 1-second schedule shows its spec and a last tick.
    const beat = page.locator('[data-testid=schedules] tbody tr', { hasText: 'beat' });
    await expect.poll(() => beat.textContent(), { timeout: 15_000 }).toContain('every 1s');
    await expect.poll(() => beat.locator('td:nth-child(3)').textContent(), { timeout: 15_000 }).not.toBe('-');

    await mkdir(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, 'dashboard.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
  });

  it('pages the error queue in id order with Earlier and Later, past ids 10 and 100', async () => {
    await node.admin.sql(
      `INSERT INTO baton_queue_errors (id, queue, payload, attempts, error, enqueued_at)
       SELECT n, 'gate', convert_to('p' || n, 'UTF8'), 2, 'x', now() FROM generate_series(8, 127) AS n`,
    );
    const ids = async () =>
      (await page.locator('[data-testid=errors] tbody tr[data-id] td:first-child').allTextContents()).map(
        Number,
      );
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
    await expect.poll(ids, { timeout: 15_000 }).toEqual(range(8, 57));
    expect(await page.isDisabled('[data-testid=errors-earlier]')).toBe(true);
    await page.click('[data-testid=errors-later]');
    await expect.poll(ids, { timeout: 15_000 }).toEqual(range(58, 107));
    await page.click('[data-testid=errors-later]');
    await expect.poll(ids, { timeout: 15_000 }).toEqual(range(108, 127));
    expect(await page.isDisabled('[data-testid=errors-later]')).toBe(true);
    await page.click('[data-testid=errors-earlier]');
    await expect.poll(ids, { timeout: 15_000 }).toEqual(range(58, 107));
  });
});
