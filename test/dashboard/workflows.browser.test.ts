// The dashboard's Workflows panel in a real browser (Debian's Chromium, playwright-core): a node runs a
// diamond workflow of commands (a → b, a → c, (b, c) → d) whose b fails in the second execution; the page
// lists the workflow with its queued and running counts and the executions, draws an execution as its DAG
// (boxes coloured by state, solid `after` edges, a dashed edge for a rule) with its runs, opens an execution from
// its #execution=<id> link, shows a task name holding markup as text, and says so when the node has no
// workflows or no workflows routes. Saves a screenshot (test-results/workflows.png).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { Browser, Page, Route } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import { launchChromium } from '../support/chromium.js';

const artifacts = fileURLToPath(new URL('../../test-results/', import.meta.url));
const TOKEN = 'workflows-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };
/** A task name no config accepts, put in the page's data on its way from the node. */
const MARKUP = '<img src=x onerror=self.hit=1>c';
const WAIT = { timeout: 30_000 };

let dir: string;
/** While it exists, task a waits: executions stay running (and the next one queued). */
let hold: string;
/** While it exists, task b fails. */
let fail: string;
let node: BatonNode;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

interface Execution {
  id: string;
  state: string;
  tasks: Record<string, string>;
}

async function call(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(`${node.address}${path}`, {
    method,
    headers: { ...auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const answer = (await response.json()) as Record<string, unknown>;
  expect(response.ok, `${method} ${path}: ${JSON.stringify(answer)}`).toBe(true);
  return answer;
}

async function executions(): Promise<Execution[]> {
  return (await call('GET', '/v1/workflows?workflow=diamond')).executions as Execution[];
}

async function ended(id: string): Promise<Execution> {
  let last: Execution | undefined;
  await expect
    .poll(
      async () => {
        last = (await executions()).find((execution) => execution.id === id);
        return last?.state;
      },
      { timeout: 60_000 },
    )
    .toMatch(/^(succeeded|failed)$/);
  return last as Execution;
}

const boxes = (target: Page = page) => target.locator('[data-testid=dag] g.task');
const stateOf = (task: string, target: Page = page) =>
  target.locator(`[data-testid=dag] g.task[data-task="${task}"]`).getAttribute('data-state');

/** The task boxes as { task: state }, once the DAG shows `id`. */
async function dagStates(id: string, target: Page = page): Promise<Record<string, string | null>> {
  await expect.poll(() => target.textContent('#execution-title'), WAIT).toBe(`Execution ${id}`);
  const states: Record<string, string | null> = {};
  for (const box of await boxes(target).all()) {
    states[(await box.getAttribute('data-task')) ?? ''] = await box.getAttribute('data-state');
  }
  return states;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-workflows-page-'));
  hold = join(dir, 'hold');
  fail = join(dir, 'fail');
  node = await startNode(
    {
      node: { name: 'wf-page', data_dir: join(dir, 'data'), shutdown_timeout_ms: 5000 },
      http: { port: 0, token: TOKEN },
      workflows: {
        diamond: {
          namespace: 'wf',
          max_concurrent: 1,
          over_limit: 'queue',
          triggers: [{ on: { key: 'diamond.go' } }],
          tasks: {
            a: { command: `while [ -e '${hold}' ]; do sleep 0.05; done` },
            b: { command: `test ! -e '${fail}'`, after: ['a'] },
            c: { command: 'true', after: ['a'] },
            d: { command: 'true', after: ['b', 'c'] },
          },
          // Never fires here (b is not lost): drawn as a dashed edge from b to c, in the same layer.
          rules: [{ on: { task: 'b', state: 'lost' }, action: 'stop', task: 'c' }],
        },
      },
    },
    { log: createLogger({ level: 'silent' }) },
  );
  browser = await launchChromium();
  // One context: its pages share the session the first one signs in for.
  const context = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
  page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(error.message));
  await page.goto(`${node.address}/`);
  await page.locator('#login').waitFor({ state: 'visible' });
  await page.fill('#login-token', TOKEN);
  await page.click('#login-form button[type=submit]');
  await page.locator('[data-testid=link]', { hasText: /^live$/ }).waitFor(WAIT);
});

afterAll(async () => {
  await rm(hold, { force: true });
  await browser?.close();
  await node?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('the Workflows panel in Chromium', () => {
  it('lists the workflow and its executions, and draws an execution as its DAG with its runs', async () => {
    const workflow = page.locator('[data-testid=workflows] tbody tr[data-workflow=diamond]');
    await expect.poll(() => workflow.textContent(), WAIT).toContain('wf: diamond.go');
    expect(await workflow.locator('td:nth-child(3)').textContent()).toBe('4');
    expect(await workflow.locator('td:nth-child(5)').textContent()).toBe('1 (queue)');

    // The first execution by its trigger event, the second by hand, with b failing.
    const sent = await fetch(`${node.address}/v1/events`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ namespace: 'wf', key: 'diamond.go' }),
    });
    expect(sent.status).toBe(201);
    await expect.poll(async () => (await executions()).length, WAIT).toBe(1);
    const first = await ended(((await executions())[0] as Execution).id);
    expect(first.state).toBe('succeeded');
    await writeFile(fail, '');
    const started = await call('POST', '/v1/workflows/diamond/start', { id: 'second-run' });
    expect(started['execution']).toBe('second-run');
    expect((await ended('second-run')).state).toBe('failed');

    const rows = page.locator('[data-testid=executions] tbody tr[data-execution]');
    await expect.poll(() => rows.count(), WAIT).toBe(2);
    const second = page.locator('[data-testid=executions] tr[data-execution=second-run]');
    await expect.poll(() => second.getAttribute('data-state'), WAIT).toBe('failed');
    expect(await second.textContent()).toContain('task b failed');
    expect(await page.getAttribute(`tr[data-execution="${first.id}"]`, 'data-state')).toBe('succeeded');

    // A click opens the execution: four boxes with their states, the edges, the runs; the URL links it.
    expect(await page.isHidden('[data-testid=execution]')).toBe(true);
    await second.locator('td:nth-child(2)').click();
    expect(await dagStates('second-run')).toEqual({
      a: 'succeeded',
      b: 'failed',
      c: 'succeeded',
      d: 'not started',
    });
    expect(new URL(page.url()).hash).toBe('#execution=second-run');
    expect(await page.getAttribute('[data-testid=dag] g[data-task=b]', 'class')).toBe('task state-failed');
    expect(await page.getAttribute('[data-testid=dag] g[data-task=d]', 'class')).toBe('task state-none');
    const edges: string[] = [];
    for (const path of await page.locator('[data-testid=dag] path.edge').all()) {
      const [kind, from, to] = await Promise.all(
        ['data-kind', 'data-from', 'data-to'].map((name) => path.getAttribute(name)),
      );
      edges.push(`${kind} ${from}→${to}`);
    }
    expect(edges.sort()).toEqual(['after a→b', 'after a→c', 'after b→d', 'after c→d', 'rule b→c']);
    const runs = page.locator('[data-testid=runs] tbody tr[data-task]');
    await expect.poll(() => runs.count(), WAIT).toBe(3);
    const failedRun = page.locator('[data-testid=runs] tbody tr[data-task=b]');
    expect(await failedRun.locator('td:nth-child(4)').textContent()).toBe('failed');
    expect(await failedRun.locator('td:nth-child(5)').textContent()).toBe('wf-page');
    expect(await failedRun.locator('td:nth-child(8)').textContent()).toBe('1');
    expect(await page.textContent('#execution-summary')).toContain('diamond (wf): failed');

    // Another click follows the other execution; Close hides it.
    await page.locator(`[data-testid=executions] tr[data-execution="${first.id}"] td:nth-child(3)`).click();
    expect(await dagStates(first.id)).toEqual({
      a: 'succeeded',
      b: 'succeeded',
      c: 'succeeded',
      d: 'succeeded',
    });
    await page.click('#execution-close');
    expect(await page.isHidden('[data-testid=execution]')).toBe(true);

    // Held in a: one execution running, the next queued behind max_concurrent = 1.
    await writeFile(hold, '');
    await rm(fail);
    await call('POST', '/v1/workflows/diamond/start', { id: 'third-run' });
    await call('POST', '/v1/workflows/diamond/start', { id: 'fourth-run' });
    const counts = () => workflow.locator('td.num').allTextContents();
    await expect.poll(counts, WAIT).toEqual(['4', '1', '1']);
    await page.locator('[data-testid=executions] a', { hasText: 'third-run' }).click();
    await expect.poll(() => stateOf('a'), WAIT).toBe('running');
    expect(await dagStates('third-run')).toEqual({
      a: 'running',
      b: 'not started',
      c: 'not started',
      d: 'not started',
    });
    // Released: the open execution follows on the page to its end.
    await rm(hold);
    await expect.poll(() => stateOf('d'), { timeout: 60_000 }).toBe('succeeded');
    await expect.poll(counts, { timeout: 60_000 }).toEqual(['4', '0', '0']);
    await mkdir(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, 'workflows.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
  });

  it('opens an execution from its link, and shows a task name holding markup as text', async () => {
    const linked = await page.context().newPage();
    linked.on('pageerror', (error) => pageErrors.push(error.message));
    // The node's answer, with task c renamed on its way to the page.
    await linked.route(
      (url) => url.pathname.startsWith('/v1/workflows/executions/'),
      async (route: Route) => {
        const answer = await route.fetch();
        if (!answer.ok()) return route.fulfill({ response: answer });
        const body = (await answer.json()) as {
          execution: { tasks: Record<string, string> };
          runs: { task: string }[];
          dag: { tasks: { name: string; after: string[] }[] };
        };
        const rename = (name: string): string => (name === 'c' ? MARKUP : name);
        body.execution.tasks = Object.fromEntries(
          Object.entries(body.execution.tasks).map(([task, state]) => [rename(task), state]),
        );
        for (const run of body.runs) run.task = rename(run.task);
        for (const task of body.dag.tasks) {
          task.name = rename(task.name);
          task.after = task.after.map(rename);
        }
        await route.fulfill({ response: answer, json: body });
      },
    );
    await linked.goto(`${node.address}/#execution=second-run`);
    expect(await dagStates('second-run', linked)).toEqual({
      a: 'succeeded',
      b: 'failed',
      [MARKUP]: 'succeeded',
      d: 'not started',
    });
    const box = linked.locator('[data-testid=dag] g.task').filter({ hasText: 'onerror' });
    expect(await box.locator('text.name').textContent()).toBe(MARKUP);
    expect(await box.locator('title').textContent()).toBe(`${MARKUP}: succeeded`);
    expect(await linked.locator('[data-testid=runs] tbody td', { hasText: 'onerror' }).textContent()).toBe(
      MARKUP,
    );
    expect(await linked.locator('#execution img').count()).toBe(0);
    expect(await linked.evaluate(`'hit' in window`)).toBe(false);
    expect(await linked.locator('[data-testid=dag] path.edge[data-kind=after]').count()).toBe(4);

    // Another link on the same page (the hash changes): an execution no one knows, said so.
    await linked.goto(`${node.address}/#execution=no-such-run`);
    await expect.poll(() => linked.textContent('#execution-error'), WAIT).toBe('no such execution');
    await linked.close();
    expect(pageErrors).toEqual([]);
  });

  it('says so when the node has no workflows, or no workflows routes, and the other panels go on', async () => {
    for (const [answer, note, workflowsText, executionsText] of [
      [
        { status: 200, json: { workflows: [], executions: [] } },
        '',
        'no workflow is configured',
        'no execution yet',
      ],
      [
        { status: 404, json: { error: 'no route GET /v1/workflows', code: 'NOT_FOUND' } },
        'this node serves no workflows (an older version of Baton)',
        'no workflow',
        'no execution',
      ],
    ] as const) {
      const other = await page.context().newPage();
      other.on('pageerror', (error) => pageErrors.push(error.message));
      await other.route(
        (url) => url.pathname === '/v1/workflows',
        (route: Route) => route.fulfill(answer),
      );
      await other.goto(`${node.address}/`);
      await expect.poll(() => other.textContent('[data-testid=link]'), WAIT).toBe('live');
      await expect.poll(() => other.textContent('[data-testid=workflows] tbody'), WAIT).toBe(workflowsText);
      expect(await other.textContent('#workflows-note')).toBe(note);
      expect(await other.textContent('[data-testid=executions] tbody')).toBe(executionsText);
      expect(await other.textContent('[data-testid=role]')).toBe('not-in-group');
      await other.close();
    }
    expect(pageErrors).toEqual([]);
  });
});
