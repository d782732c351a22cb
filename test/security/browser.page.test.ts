// Hostile pages in a real browser: Debian's Chromium (playwright-core) loads pages from other origins (another
// port of 127.0.0.1, and http://localhost:PORT against nodes on 127.0.0.1) that send the requests a page can
// send without the node's consent: no-cors fetches and form posts. A tokenless node stores nothing from them;
// a node whose dashboard is signed in refuses them although Chromium sends the session cookie along (another
// port is the same site, so SameSite=Strict does not stop it). The signed-in dashboard still acts.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import { launchChromium } from '../support/chromium.js';

const handler = fileURLToPath(new URL('../fixtures/gate-handler.ts', import.meta.url));
const TOKEN = 'page-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };
const log = createLogger({ level: 'silent' });

let dir: string;
/** No token: the quickstart's shape. */
let open: BatonNode;
/** A token, and the dashboard signed in. */
let guarded: BatonNode;
let attacker: http.Server;
let attackerPort: number;
let browser: Browser;
let context: BrowserContext;

const count = async (node: BatonNode, table: string, where = ''): Promise<number> =>
  Number((await node.admin.sql(`SELECT count(*)::int AS n FROM ${table} ${where}`)).rows[0]?.['n']);

const errorsOf = async (node: BatonNode): Promise<number> => (await node.admin.queues())[0]?.errors ?? -1;

/** The origin of a node under another name for the same address, e.g. http://localhost:PORT. */
const asLocalhost = (node: BatonNode): string => (node.address ?? '').replace('127.0.0.1', 'localhost');

async function startGateNode(name: string, http: Record<string, unknown>): Promise<BatonNode> {
  return startNode(
    {
      node: { name, data_dir: join(dir, name), shutdown_timeout_ms: 5000 },
      http: { port: 0, ...http },
      queues: {
        gate: { handler, max_attempts: 1, retry_delay_ms: 20, retry_max_delay_ms: 20, inline: false },
      },
    },
    { log },
  );
}

interface Attempt {
  /** The status Chromium received (the page itself sees an opaque answer). */
  status: number;
  /** The Origin and Cookie headers Chromium sent, as its network stack saw them. */
  origin: string | undefined;
  cookie: string | undefined;
}

/** Each test drives Chromium through several pages and posts: minutes on a loaded 2-core machine. */
const PAGE_TEST_TIMEOUT_MS = 300_000;

/** The longest one page step (a navigation, a click, a response) may take on a loaded machine. */
const STEP_TIMEOUT_MS = 40_000;

/** A page of another origin, and the headers Chromium's network stack put on each of its requests. */
interface HostilePage {
  readonly page: Page;
  /** The wire headers of the last request to `url`. */
  sent(url: string): Record<string, string> | undefined;
}

/**
 * The other origin's page, opened again when a loaded machine leaves one of its steps without an answer
 * (opening a context, a page or its CDP session has no timeout of Playwright's own).
 */
async function hostilePage(origin: string): Promise<HostilePage> {
  for (let tries = 1; ; tries++) {
    const started = Date.now();
    try {
      return await withinStep(openHostilePage(origin), `opening a page of ${origin}`);
    } catch (error) {
      console.warn(
        `try ${tries} of opening a page of ${origin} failed after ${Date.now() - started} ms: ${String(error)}`,
      );
      if (tries >= 3 || !/timed out/.test(String(error))) throw error;
    }
  }
}

/** Closes the other origin's page; a close that hangs is reported, and the browser's close ends it. */
async function closeHostile(hostile: HostilePage): Promise<void> {
  await withinStep(hostile.page.close(), 'closing the page of the other origin').catch((error: unknown) => {
    console.warn(String(error));
  });
}

async function openHostilePage(origin: string): Promise<HostilePage> {
  // A context of its own holding the browser's cookies: the page sends what any page of the user's browser
  // would, but over connections of its own, never queued behind the dashboard's streams to the same node
  // (Chromium opens at most six connections to one host and port).
  const own = await browser.newContext();
  own.setDefaultTimeout(STEP_TIMEOUT_MS);
  await own.addCookies(await context.cookies());
  const page = await own.newPage();
  // A close that comes late (after the browser's) must not reject unheard.
  page.on('close', () => void own.close().catch(() => undefined));
  // Playwright's own view of a request leaves out what the network stack adds (Origin, Cookie): ask CDP.
  const cdp = await own.newCDPSession(page);
  const urls = new Map<string, string>();
  const headers = new Map<string, Record<string, string>>();
  cdp.on('Network.requestWillBeSent', (event) => urls.set(event.requestId, event.request.url));
  cdp.on('Network.requestWillBeSentExtraInfo', (event) => headers.set(event.requestId, event.headers));
  await cdp.send('Network.enable');
  const loaded = await page.goto(`${origin}/`);
  expect(loaded?.status()).toBe(200);
  const sent = (url: string): Record<string, string> | undefined => {
    const ids = [...urls].filter(([, candidate]) => candidate === url).map(([id]) => id);
    const last = ids.at(-1);
    const found = last === undefined ? undefined : headers.get(last);
    return (
      found && Object.fromEntries(Object.entries(found).map(([name, value]) => [name.toLowerCase(), value]))
    );
  };
  return { page, sent };
}

async function attempt(hostile: HostilePage, url: string, send: () => Promise<unknown>): Promise<Attempt> {
  // A request that a loaded machine leaves without an answer (Chromium queues it, the page's renderer
  // stalls) is sent again: what is asserted is the answer, and a 403 is the same each time. Each try is
  // bounded as a whole, page.evaluate included (it has no timeout of its own), so that a stuck try is
  // reported and retried, never left to the test's own timeout.
  for (let tries = 1; ; tries++) {
    const started = Date.now();
    try {
      const answered = Promise.all([
        hostile.page.waitForResponse(
          (candidate) => candidate.url() === url && candidate.request().method() === 'POST',
        ),
        send(),
      ]);
      const [response] = await withinStep(answered, `POST ${url}`);
      await expect.poll(() => hostile.sent(url) !== undefined, { timeout: 15_000 }).toBe(true);
      const headers = hostile.sent(url) ?? {};
      return { status: response.status(), origin: headers['origin'], cookie: headers['cookie'] };
    } catch (error) {
      const timedOut = error instanceof Error && /Timeout|timed out/i.test(`${error.name} ${error.message}`);
      console.warn(`try ${tries} of POST ${url} failed after ${Date.now() - started} ms: ${String(error)}`);
      if (tries >= 3 || !timedOut) throw error;
    }
  }
}

/** Rejects when `promise` has not settled within STEP_TIMEOUT_MS. */
async function withinStep<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: timed out after ${STEP_TIMEOUT_MS} ms`)),
      STEP_TIMEOUT_MS,
    );
  });
  promise.catch(() => undefined); // settled later, after the timeout won: not an unhandled rejection
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Sends, from the page's origin, what any page may send to any address: a no-cors fetch with the browser's
 * cookies. Returns what Chromium saw of it on the wire.
 */
function noCorsPost(hostile: HostilePage, url: string, body: string | null): Promise<Attempt> {
  return attempt(hostile, url, () =>
    hostile.page.evaluate(
      async ([target, payload]) => {
        await fetch(target, {
          signal: AbortSignal.timeout(20_000),
          method: 'POST',
          mode: 'no-cors',
          credentials: 'include',
          ...(payload === null ? {} : { body: payload }),
        });
      },
      [url, body] as const,
    ),
  );
}

/** A form post (a top-level navigation, text/plain body) from the page to `url`. */
async function formPost(hostile: HostilePage, url: string, field: string): Promise<Attempt> {
  // setContent writes into the current document: the form stays on the page's origin.
  await hostile.page.setContent(
    `<form method="POST" enctype="text/plain" action="${url}"><input name="${field}"><button>go</button></form>`,
  );
  return attempt(hostile, url, () => hostile.page.click('button'));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-pages-'));
  open = await startGateNode('open', {});
  guarded = await startGateNode('guarded', { token: TOKEN });
  // The other origin: a plain page served from another port of the same host.
  attacker = http.createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end('<!doctype html><title>elsewhere</title><h1>another site</h1>');
  });
  await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
  const address = attacker.address();
  attackerPort = typeof address === 'object' && address !== null ? address.port : 0;
  browser = await launchChromium();
  context = await browser.newContext();
  // Every wait of Playwright's ends with an error that names the step, never with the test's own timeout.
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await new Promise((resolve) => (attacker ? attacker.close(resolve) : resolve(undefined)));
  await open?.stop();
  await guarded?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('a tokenless node and pages of other origins', { timeout: PAGE_TEST_TIMEOUT_MS }, () => {
  it('stores nothing a page of another origin posts, by no-cors fetch or by form', async () => {
    const target = `${open.address}/v1/queues/gate/records`;
    const origins = [
      `http://127.0.0.1:${attackerPort}`, // another port of the same host
      `http://localhost:${attackerPort}`, // another site
      asLocalhost(open), // the node's own port under another name: another site too
    ];
    for (const origin of origins) {
      const hostile = await hostilePage(origin);
      const fetched = await noCorsPost(hostile, target, `from-${origin}`);
      expect(fetched.status, origin).toBe(403);
      expect(fetched.origin).toBe(origin);
      const posted = await formPost(hostile, target, `form-${origin}`);
      expect(posted.status, origin).toBe(403);
      expect(await hostile.page.textContent('body')).toContain('cross-origin request refused');
      await closeHostile(hostile);
    }
    const sql = `${open.address}/v1/sql`;
    const hostile = await hostilePage(`http://localhost:${attackerPort}`);
    const planted = await noCorsPost(hostile, sql, JSON.stringify({ sql: 'CREATE TABLE planted (x int)' }));
    expect(planted.status).toBe(403);
    await closeHostile(hostile);
    expect(await count(open, 'gate_words')).toBe(0);
    expect(await count(open, 'information_schema.tables', `WHERE table_name = 'planted'`)).toBe(0);
    expect((await open.admin.queues())[0]?.depth).toBe(0);
  });

  it('lets its own dashboard act', async () => {
    await open.admin.sql(`INSERT INTO gate_refused (word) VALUES ('held')`);
    const published = await fetch(`${open.address}/v1/queues/gate/records`, { method: 'POST', body: 'held' });
    expect(published.status).toBe(202);
    await expect.poll(() => errorsOf(open), { timeout: 15_000 }).toBe(1);
    await open.admin.sql(`DELETE FROM gate_refused`);
    const page = await context.newPage();
    await page.goto(`${open.address}/`);
    const errorRow = page.locator('[data-testid=errors] tbody tr[data-id]');
    await expect.poll(() => errorRow.count(), { timeout: 15_000 }).toBe(1);
    await errorRow.locator('button[data-action=replay]').click();
    await expect.poll(() => count(open, 'gate_words', `WHERE word = 'held'`), { timeout: 15_000 }).toBe(1);
    expect(await page.textContent('#errors-note')).not.toMatch(/refused|403/);
    await page.close();
  });
});

describe(
  'a signed-in dashboard and a page on another port of the same host',
  { timeout: PAGE_TEST_TIMEOUT_MS },
  () => {
    let dashboard: Page;

    it('signs in and shows the error record', async () => {
      await guarded.admin.sql(`INSERT INTO gate_refused (word) VALUES ('later'), ('never')`);
      const published = await fetch(`${guarded.address}/v1/queues/gate/records`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/x-ndjson' },
        body: 'later\nnever',
      });
      expect(published.status).toBe(202);
      await expect.poll(() => errorsOf(guarded), { timeout: 15_000 }).toBe(2);
      // A replay would now store the words: a refused replay leaves them in the error queue.
      await guarded.admin.sql(`DELETE FROM gate_refused`);

      dashboard = await context.newPage();
      await dashboard.goto(`${guarded.address}/`);
      await dashboard.locator('#login').waitFor({ state: 'visible' });
      await dashboard.fill('#login-token', TOKEN);
      await dashboard.click('#login-form button[type=submit]');
      await expect.poll(() => dashboard.textContent('[data-testid=link]'), { timeout: 15_000 }).toBe('live');
      const errorRows = dashboard.locator('[data-testid=errors] tbody tr[data-id]');
      await expect.poll(() => errorRows.count(), { timeout: 15_000 }).toBe(2);
      // Closed while the hostile page posts (its session cookie stays in the browser): the dashboard's
      // streams and once-a-second snapshots would only load the node and the browser meanwhile.
      await dashboard.close();
    });

    it('refuses ingest, migrate, initdb and a bodiless replay sent with the cookie', async () => {
      const hostile = await hostilePage(`http://127.0.0.1:${attackerPort}`);
      const base = guarded.address ?? '';
      for (const [path, body] of [
        ['/v1/queues/gate/records', 'planted'],
        ['/v1/migrate', null],
        ['/v1/initdb', null],
        ['/v1/queues/gate/errors/replay', null],
      ] as const) {
        const sent = await noCorsPost(hostile, `${base}${path}`, body);
        expect(sent.status, path).toBe(403);
        // Chromium did send the session: only the node's checks stood in the way.
        expect(sent.cookie, path).toMatch(/baton_session=/);
      }
      const posted = await formPost(hostile, `${base}/v1/queues/gate/records`, 'form-planted');
      expect(posted.status).toBe(403);
      expect(posted.cookie).toMatch(/baton_session=/);
      await closeHostile(hostile);
      expect(await count(guarded, 'gate_words')).toBe(0);
      expect(await errorsOf(guarded)).toBe(2);
      expect((await guarded.admin.queues())[0]?.depth).toBe(0);
    });

    it('still replays and drops from the dashboard itself', async () => {
      // Opened again with the session the sign-in left in the browser: no second sign-in.
      dashboard = await context.newPage();
      await dashboard.goto(`${guarded.address}/`);
      await expect.poll(() => dashboard.textContent('[data-testid=link]'), { timeout: 15_000 }).toBe('live');
      const errorRows = dashboard.locator('[data-testid=errors] tbody tr[data-id]');
      await errorRows.filter({ hasText: 'later' }).locator('button[data-action=replay]').click();
      await expect
        .poll(() => count(guarded, 'gate_words', `WHERE word = 'later'`), { timeout: 15_000 })
        .toBe(1);
      await expect.poll(() => errorRows.count(), { timeout: 15_000 }).toBe(1);
      await errorRows.filter({ hasText: 'never' }).locator('button[data-action=drop]').click();
      await expect.poll(() => errorsOf(guarded), { timeout: 15_000 }).toBe(0);
      expect(await dashboard.textContent('#errors-note')).not.toMatch(/refused|403/);
      expect(await count(guarded, 'gate_words', `WHERE word = 'never'`)).toBe(0);
    });
  },
);
