import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { applyEnvOverrides, parseEnvValue } from '../src/config/env.js';
import { isLoopbackHost, loadConfig, resolveConfig } from '../src/config/load.js';
import { redactConfig } from '../src/config/redact.js';
import { ConfigError } from '../src/errors.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'baton-config-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeConfig(text: string, name = 'baton.toml'): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, text);
  return file;
}

/** The ConfigError thrown by `run`, or a failed expectation when it resolves or throws something else. */
async function configError(run: () => unknown): Promise<ConfigError> {
  try {
    await run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    if (error instanceof ConfigError) return error;
  }
  throw new Error('expected a ConfigError');
}

const FULL = `
[node]
name = "node-a"
data_dir = "var/baton"
shutdown_timeout_ms = 5000
startup_timeout_ms = 1000

[log]
level = "debug"

[http]
enabled = true
host = "0.0.0.0"
port = 9090
token = "root-token-0123456789"
body_limit_bytes = 2048
hosts = ["Baton.Example.com", "[fd00::1]"]
request_timeout_ms = 5000
trust_proxy = ["10.0.0.0/8", "loopback"]

[[http.tokens]]
token = "ingest-token-0123456789"
namespaces = ["ping", "pong"]

[[http.tokens]]
token = "admin-token-0123456789"

[[http.tokens]]
token = "scrape-token-0123456789"
scopes = ["metrics"]

[store]
path = "db"

[queues.ping]
handler = "./handlers/ping.ts"
batch_size = 100
concurrency = 4
max_attempts = 3
timeout_ms = 2000
retry_delay_ms = 10
retry_max_delay_ms = 100
inline = false
ordering = "key"
dedup_window_ms = 600000
key_concurrency = 3
key_rate_limit = 2.5

[queues."events.v2"]
handler = "@acme/baton-handler"
`;

describe('loadConfig', () => {
  it('uses defaults when there is no file', async () => {
    const config = await loadConfig({ cwd: dir, env: {} });
    expect(config).toEqual({
      file: undefined,
      baseDir: dir,
      node: {
        name: os.hostname(),
        dataDir: path.join(dir, '.baton'),
        shutdownTimeoutMs: 10_000,
        startupTimeoutMs: 30_000,
      },
      log: { level: 'info', format: 'auto' },
      http: {
        enabled: true,
        host: '127.0.0.1',
        port: 8080,
        token: undefined,
        tokens: [],
        bodyLimitBytes: 10_485_760,
        hosts: [],
        requestTimeoutMs: 30_000,
        trustProxy: false,
      },
      store: { kind: 'embedded', path: path.join(dir, '.baton', 'store'), schema: 'baton' },
      redis: { url: 'redis://127.0.0.1:6379' },
      queues: {},
      group: undefined,
      components: {},
      events: { enabled: true, retentionMs: 0, maxBatch: 10_000, maxStreamsPerClient: 16 },
      tasks: {},
      rules: [],
      schedules: {},
      workflows: {},
    });
  });

  it('reads baton.toml from cwd when no file is named', async () => {
    await writeConfig('[log]\nlevel = "warn"\n');
    const config = await loadConfig({ cwd: dir, env: {} });
    expect(config.file).toBe(path.join(dir, 'baton.toml'));
    expect(config.log.level).toBe('warn');
  });

  it('reads every option of a full file', async () => {
    const file = await writeConfig(FULL, 'full.toml');
    const config = await loadConfig({ file: 'full.toml', cwd: dir, env: {} });
    expect(config.file).toBe(file);
    expect(config.node).toEqual({
      name: 'node-a',
      dataDir: path.join(dir, 'var', 'baton'),
      shutdownTimeoutMs: 5000,
      startupTimeoutMs: 1000,
    });
    expect(config.log.level).toBe('debug');
    expect(config.http).toEqual({
      enabled: true,
      host: '0.0.0.0',
      port: 9090,
      token: 'root-token-0123456789',
      tokens: [
        {
          token: 'ingest-token-0123456789',
          scopes: ['read', 'write'],
          namespaces: ['ping', 'pong'],
          queues: [],
        },
        {
          token: 'admin-token-0123456789',
          scopes: ['admin', 'read', 'write', 'metrics'],
          namespaces: undefined,
          queues: undefined,
        },
        { token: 'scrape-token-0123456789', scopes: ['metrics'], namespaces: undefined, queues: undefined },
      ],
      adminToken: 'root-token-0123456789',
      bodyLimitBytes: 2048,
      hosts: ['baton.example.com', 'fd00::1'],
      requestTimeoutMs: 5000,
      trustProxy: ['10.0.0.0/8', 'loopback'],
    });
    expect(config.store).toEqual({ kind: 'embedded', path: path.join(dir, 'db'), schema: 'baton' });
    expect(config.queues['ping']).toEqual({
      name: 'ping',
      handler: path.join(dir, 'handlers', 'ping.ts'),
      backend: 'store',
      key: 'ping',
      migrations: path.join(dir, 'handlers', 'migrations', 'ping'),
      runOn: 'any',
      batchSize: 100,
      concurrency: 4,
      maxAttempts: 3,
      timeoutMs: 2000,
      retryDelayMs: 10,
      retryMaxDelayMs: 100,
      inline: false,
      ordering: 'key',
      dedupWindowMs: 600_000,
      keyConcurrency: 3,
      keyRateLimit: 2.5,
      url: undefined,
    });
    expect(config.queues['events.v2']).toMatchObject({ handler: '@acme/baton-handler', batchSize: 500 });
  });

  it('refuses a named file that does not exist', async () => {
    const error = await configError(() => loadConfig({ file: 'missing.toml', cwd: dir, env: {} }));
    expect(error.file).toBe(path.join(dir, 'missing.toml'));
    expect(error.message).toContain('not found');
  });

  it('reports malformed TOML with its line and column', async () => {
    const file = await writeConfig('[node]\nname = "a"\n\n[queues.ping]\nbatch_size = = 3\n');
    const error = await configError(() => loadConfig({ cwd: dir, env: {} }));
    expect(error.file).toBe(file);
    expect(error.message).toMatch(/line 5, column \d+/);
  });

  it('resolves relative paths against the config file folder, not cwd', async () => {
    await mkdir(path.join(dir, 'conf'));
    await writeConfig('[node]\ndata_dir = "../data"\n[queues.q]\nhandler = "h.js"\n', 'conf/b.toml');
    await writeConfig('[queues.r]\nhandler = "./r/h.ts"\n', 'conf/c.toml');
    const config = await loadConfig({ file: 'conf/b.toml', cwd: dir, env: {} });
    expect(config.baseDir).toBe(path.join(dir, 'conf'));
    expect(config.node.dataDir).toBe(path.join(dir, 'data'));
    expect(config.store).toEqual({
      kind: 'embedded',
      path: path.join(dir, 'data', 'store'),
      schema: 'baton',
    });
    expect(config.queues['q']?.handler).toBe('h.js');
    const other = await loadConfig({ file: path.join(dir, 'conf', 'c.toml'), cwd: '/', env: {} });
    expect(other.queues['r']?.handler).toBe(path.join(dir, 'conf', 'r', 'h.ts'));
  });
});

describe('validation', () => {
  const resolve = (raw: unknown) => () => resolveConfig(raw, { baseDir: dir, env: {} });

  it('refuses an unknown top-level key with its path', async () => {
    await writeConfig('[nodes]\nname = "a"\n');
    const error = await configError(() => loadConfig({ cwd: dir, env: {} }));
    expect(error.key).toBe('nodes');
    expect(error.message).toContain('unknown key "nodes", did you mean "node"?');
  });

  it('refuses an unknown nested key with its path and a suggestion', async () => {
    await writeConfig('[queues.ping]\nhandler = "./h.ts"\nbatchsize = 10\n');
    const error = await configError(() => loadConfig({ cwd: dir, env: {} }));
    expect(error.key).toBe('queues.ping.batchsize');
    expect(error.file).toBe(path.join(dir, 'baton.toml'));
    expect(error.message).toContain('unknown key "batchsize", did you mean "batch_size"?');
  });

  it('reports each unknown key of a table at its own path', async () => {
    const error = await configError(resolve({ http: { prot: 1, colour: 'red' } }));
    expect(error.key).toBe('http.prot');
    expect(error.message).toContain('unknown key "prot", did you mean "port"?');
    expect(error.message).toContain('also key "http.colour": unknown key "colour"');
    expect(error.message).not.toMatch(/"colour", did you mean/);
  });

  it('names the key and the value of a wrong type', async () => {
    const error = await configError(resolve({ queues: { ping: { handler: './h.ts', batch_size: 'abc' } } }));
    expect(error.key).toBe('queues.ping.batch_size');
    expect(error.message).toContain('expected an integer from 1 to 100000, got "abc"');
  });

  it('names a date given where a string belongs, an invalid one too', async () => {
    const valid = await configError(resolve({ http: { host: new Date(Date.UTC(2026, 0, 2)) } }));
    expect(valid.message).toContain('got the date 2026-01-02T00:00:00.000Z');
    const invalid = await configError(resolve({ http: { host: new Date(Number.NaN) } }));
    expect(invalid.key).toBe('http.host');
    expect(invalid.message).toContain('got an invalid date');
  });

  it('refuses key_concurrency and key_rate_limit on a queue without ordering = "key"', async () => {
    for (const option of ['key_concurrency', 'key_rate_limit']) {
      const error = await configError(resolve({ queues: { ping: { handler: './h.ts', [option]: 2 } } }));
      expect(error.key).toBe(`queues.ping.${option}`);
      expect(error.message).toContain('only for ordering = "key"');
    }
    const zero = await configError(
      resolve({ queues: { ping: { handler: './h.ts', ordering: 'key', key_concurrency: 0 } } }),
    );
    expect(zero.key).toBe('queues.ping.key_concurrency');
  });

  it('lists every issue, the first one naming the key', async () => {
    const error = await configError(resolve({ http: { port: 70_000 }, log: { level: 'loud' } }));
    expect(error.key).toBe('log.level');
    expect(error.message).toContain(
      'expected one of fatal, error, warn, info, debug, trace, silent, got "loud"',
    );
    expect(error.message).toContain('also key "http.port": expected an integer from 0 to 65535, got 70000');
  });

  it('requires a handler for every queue', async () => {
    const error = await configError(resolve({ queues: { ping: {} } }));
    expect(error.key).toBe('queues.ping.handler');
    expect(error.message).toContain('required');
  });

  it('refuses an invalid queue name', async () => {
    const error = await configError(resolve({ queues: { 'bad name': { handler: 'x' } } }));
    expect(error.key).toBe('queues.bad name');
    expect(error.message).toContain('invalid queue name "bad name"');
  });

  it('refuses the queue name "baton", under which its own migrations are recorded', async () => {
    const error = await configError(resolve({ queues: { baton: { handler: 'x' } } }));
    expect(error.key).toBe('queues.baton');
    expect(error.message).toContain('the queue name "baton" is reserved');
  });

  it('refuses a retry_max_delay_ms below retry_delay_ms', async () => {
    const error = await configError(resolve({ queues: { q: { handler: 'x', retry_delay_ms: 60_000 } } }));
    expect(error.key).toBe('queues.q.retry_max_delay_ms');
    expect(error.message).toContain('expected at least retry_delay_ms (60000), got 32000');
  });

  it('refuses a short token in [[http.tokens]]', async () => {
    const error = await configError(resolve({ http: { tokens: [{ token: 'short' }] } }));
    expect(error.key).toBe('http.tokens[0].token');
  });

  it('resolves tasks and rules, and names the key of a bad one', async () => {
    const config = resolveConfig(
      {
        tasks: {
          build: { command: 'make' },
          train: { module: './train.ts', namespace: 'ml', timeout_ms: 5 },
        },
        rules: [{ on: { key: 'go', value: 'now' }, action: 'start', task: 'build', on_lost: 'restart' }],
      },
      { baseDir: dir, env: {} },
    );
    expect(config.tasks['train']).toEqual({
      name: 'train',
      command: undefined,
      module: path.join(dir, 'train.ts'),
      cwd: dir,
      namespace: 'ml',
      timeoutMs: 5,
    });
    expect(config.rules).toEqual([
      {
        index: 0,
        on: { namespace: 'default', key: 'go', value: 'now' },
        action: 'start',
        task: 'build',
        onLost: 'restart',
      },
    ]);
    const unknown = await configError(
      resolve({
        tasks: { build: { command: 'make' } },
        rules: [{ on: { key: 'k' }, action: 'start', task: 'bulid' }],
      }),
    );
    expect(unknown.key).toBe('rules[0].task');
    expect(unknown.message).toContain('expected one of build');
    const both = await configError(resolve({ tasks: { t: { command: 'a', module: './b.ts' } } }));
    expect(both.key).toBe('tasks.t.module');
    const neither = await configError(resolve({ tasks: { t: {} } }));
    expect(neither.message).toContain('exactly one of "command" or "module"');
    const action = await configError(
      resolve({ tasks: { t: { command: 'a' } }, rules: [{ on: { key: 'k' }, action: 'launch', task: 't' }] }),
    );
    expect(action.key).toBe('rules[0].action');
    const noEvents = await configError(
      resolve({ events: { enabled: false }, tasks: { t: { command: 'a' } } }),
    );
    expect(noEvents.key).toBe('events.enabled');
  });

  it('requires a token when http.host is not loopback', async () => {
    const error = await configError(resolve({ http: { host: '0.0.0.0' } }));
    expect(error.key).toBe('http.token');
    expect(() =>
      resolveConfig({ http: { host: '0.0.0.0', token: 'secret-token-0123' } }, { baseDir: dir, env: {} }),
    ).not.toThrow();
    expect(() =>
      resolveConfig(
        { http: { host: '10.0.0.1', tokens: [{ token: '1234567890123456' }] } },
        { baseDir: dir, env: {} },
      ),
    ).not.toThrow();
    expect(() =>
      resolveConfig({ http: { host: '0.0.0.0', enabled: false } }, { baseDir: dir, env: {} }),
    ).not.toThrow();
  });

  it('recognises loopback hosts', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', 'LOCALHOST']) {
      expect(isLoopbackHost(host), host).toBe(true);
    }
    for (const host of ['0.0.0.0', '::', '10.0.0.1', 'example.com', '127.0.0.1.example.com']) {
      expect(isLoopbackHost(host), host).toBe(false);
    }
  });

  it('refuses a raw value that is not a table', async () => {
    const error = await configError(resolve('nope'));
    expect(error.message).toContain('expected a table of options, got "nope"');
  });
});

describe('env overrides', () => {
  it('parses values as TOML literals, else as plain strings', () => {
    expect(parseEnvValue('1000')).toBe(1000);
    expect(parseEnvValue('true')).toBe(true);
    expect(parseEnvValue('"1000"')).toBe('1000');
    expect(parseEnvValue('["a", "b"]')).toEqual(['a', 'b']);
    expect(parseEnvValue('./h.ts')).toBe('./h.ts');
    expect(parseEnvValue('1\nother = 2')).toBe('1\nother = 2');
    expect(parseEnvValue('2024-01-01')).toBe('2024-01-01');
  });

  it('sets a number and creates a new queue', async () => {
    await writeConfig('[queues.ping]\nhandler = "./ping.ts"\n');
    const config = await loadConfig({
      cwd: dir,
      env: {
        BATON_QUEUES__PING__BATCH_SIZE: '1000',
        BATON_HTTP__PORT: '9000',
        BATON_QUEUES__NEW__HANDLER: './h.ts',
        HOME: '/root',
        BATON_CONFIG: 'elsewhere.toml',
      },
    });
    expect(config.queues['ping']?.batchSize).toBe(1000);
    expect(config.http.port).toBe(9000);
    expect(config.queues['new']).toMatchObject({ name: 'new', handler: path.join(dir, 'h.ts') });
  });

  it('matches existing keys without regard to case', () => {
    const { raw, origins } = applyEnvOverrides(
      { queues: { Ping: { handler: 'x' } } },
      { BATON_QUEUES__PING__INLINE: 'false' },
    );
    expect(raw).toEqual({ queues: { Ping: { handler: 'x', inline: false } } });
    expect(origins.get('queues.Ping.inline')).toBe('BATON_QUEUES__PING__INLINE');
  });

  it('does not change the object it is given', () => {
    const raw = { http: { port: 1 } };
    applyEnvOverrides(raw, { BATON_HTTP__PORT: '2' });
    expect(raw.http.port).toBe(1);
  });

  it('names the variable behind an invalid value', async () => {
    const error = await configError(() => loadConfig({ cwd: dir, env: { BATON_HTTP__PORT: 'eighty' } }));
    expect(error.key).toBe('http.port');
    expect(error.message).toContain('got "eighty" (set by BATON_HTTP__PORT)');
  });

  it('refuses a path through a value that is not a table', async () => {
    await writeConfig('[log]\nlevel = "info"\n');
    const error = await configError(() => loadConfig({ cwd: dir, env: { BATON_LOG__LEVEL__X: '1' } }));
    expect(error.key).toBe('log.level');
    expect(error.message).toContain(
      'BATON_LOG__LEVEL__X sets a key inside "log.level", which is not a table',
    );
  });
});

describe('the admin token', () => {
  it('is [http] token, else the first [[http.tokens]] entry with the admin scope', () => {
    const resolve = (http: object) => resolveConfig({ http }, { baseDir: dir, env: {} }).http.adminToken;
    expect(resolve({ token: 'root-token' })).toBe('root-token');
    const tokens = [
      { token: 'team-token', namespaces: ['team-a'] },
      { token: 'reader-token', scopes: ['read'] },
      { token: 'ops-token' },
    ];
    expect(resolve({ tokens })).toBe('ops-token');
    expect(resolve({ tokens: [{ token: 'ops-token', scopes: ['metrics', 'admin'] }] })).toBe('ops-token');
    // A limited token, or one without admin, never acts for a whole command.
    expect(resolve({ tokens: [{ token: 'team-token', namespaces: ['team-a'] }] })).toBeUndefined();
    expect(
      resolve({ tokens: [{ token: 'team-token', scopes: ['read', 'write', 'metrics'] }] }),
    ).toBeUndefined();
    expect(resolve({})).toBeUndefined();
  });
});

describe('token scopes and limits', () => {
  const tokens = (entries: object[], host = '127.0.0.1') =>
    resolveConfig({ http: { host, tokens: entries } }, { baseDir: dir, env: {} }).http.tokens;

  it('defaults: every scope when limited by nothing, read and write of what a limited entry names', () => {
    expect(
      tokens([
        { token: 'everything' },
        { token: 'team-only', namespaces: ['team-a'] },
        { token: 'queue-only', queues: ['orders'] },
        { token: 'scraper-1', scopes: ['metrics', 'metrics'] },
        { token: 'team-reader', scopes: ['read'], namespaces: ['team-a'], queues: ['orders'] },
      ]),
    ).toEqual([
      {
        token: 'everything',
        scopes: ['admin', 'read', 'write', 'metrics'],
        namespaces: undefined,
        queues: undefined,
      },
      { token: 'team-only', scopes: ['read', 'write'], namespaces: ['team-a'], queues: [] },
      { token: 'queue-only', scopes: ['read', 'write'], namespaces: [], queues: ['orders'] },
      { token: 'scraper-1', scopes: ['metrics'], namespaces: undefined, queues: undefined },
      { token: 'team-reader', scopes: ['read'], namespaces: ['team-a'], queues: ['orders'] },
    ]);
  });

  it('refuses an unknown scope, naming the key', async () => {
    const error = await configError(() => tokens([{ token: 'team-token', scopes: ['read', 'sudo'] }]));
    expect(error.key).toBe('http.tokens[0].scopes[1]');
    expect(error.message).toContain('expected one of admin, read, write, metrics, got "sudo"');
    const notArray = await configError(() => tokens([{ token: 'team-token', scopes: 'read' }]));
    expect(notArray.key).toBe('http.tokens[0].scopes');
    const empty = await configError(() => tokens([{ token: 'team-token', scopes: [] }]));
    expect(empty.key).toBe('http.tokens[0].scopes');
    expect(empty.message).toContain('at least one scope');
  });

  it('refuses admin on an entry limited to namespaces or queues', async () => {
    for (const limit of [{ namespaces: ['team-a'] }, { queues: ['orders'] }]) {
      const error = await configError(() =>
        tokens([{ token: 'ops-token' }, { token: 'team-token', scopes: ['admin'], ...limit }]),
      );
      expect(error.key).toBe('http.tokens[1].scopes');
      expect(error.message).toContain('admin scope cannot be limited');
    }
  });

  it('refuses a token given twice', async () => {
    const error = await configError(() =>
      resolveConfig(
        { http: { token: 'same-token', tokens: [{ token: 'same-token', scopes: ['read'] }] } },
        { baseDir: dir, env: {} },
      ),
    );
    expect(error.key).toBe('http.tokens[0].token');
    expect(error.message).toContain('the same token as http.token');
  });

  it('needs tokens of 16 characters or more off loopback, and keeps the minimum on loopback', async () => {
    const short = await configError(() =>
      resolveConfig({ http: { host: '0.0.0.0', token: 'x' } }, { baseDir: dir, env: {} }),
    );
    expect(short.key).toBe('http.token');
    expect(short.message).toContain('at least 16 characters');
    const entry = await configError(() =>
      tokens([{ token: '0123456789abcdef' }, { token: '0123456789abcde' }], '0.0.0.0'),
    );
    expect(entry.key).toBe('http.tokens[1].token');
    // Loopback: [http] token any length, [[http.tokens]] at least 8 characters, as before.
    expect(resolveConfig({ http: { token: 'x' } }, { baseDir: dir, env: {} }).http.token).toBe('x');
    expect(tokens([{ token: '12345678' }])).toHaveLength(1);
    // A disabled API listens nowhere: its host does not matter.
    expect(() =>
      resolveConfig({ http: { host: '0.0.0.0', enabled: false, token: 'x' } }, { baseDir: dir, env: {} }),
    ).not.toThrow();
  });
});

describe('precedence', () => {
  it('applies defaults < file < env < overrides', async () => {
    await writeConfig('[http]\nport = 1111\nbody_limit_bytes = 100\n[log]\nlevel = "warn"\n');
    const env = { BATON_HTTP__PORT: '2222', BATON_LOG__LEVEL: 'error' };
    const config = await loadConfig({
      cwd: dir,
      env,
      overrides: { http: { port: 3333 }, log: { level: undefined } },
    });
    expect(config.http.port).toBe(3333);
    expect(config.log.level).toBe('error');
    expect(config.http.bodyLimitBytes).toBe(100);
    expect(config.http.host).toBe('127.0.0.1');
  });

  it('does not blame an env variable for a value a flag replaced', async () => {
    const error = await configError(() =>
      loadConfig({ cwd: dir, env: { BATON_HTTP__PORT: '2222' }, overrides: { http: { port: -1 } } }),
    );
    expect(error.key).toBe('http.port');
    expect(error.message).not.toContain('BATON_HTTP__PORT');
  });
});

describe('redactConfig', () => {
  it('hides tokens and URL passwords', () => {
    const config = resolveConfig(
      { http: { token: 'root-token-123', tokens: [{ token: 'ingest-token', namespaces: ['a'] }] } },
      { baseDir: dir, env: {} },
    );
    const withUrl = {
      ...config,
      node: { ...config.node, name: 'postgres://u:secret@h:5432/db?password=p2&x=1' },
    };
    const text = JSON.stringify(redactConfig(withUrl));
    expect(text).not.toContain('root-token-123');
    expect(text).not.toContain('ingest-token');
    expect(text).not.toContain('secret');
    expect(text).not.toContain('p2');
    expect(text).toContain('postgres://u:***@h:5432/db?password=***&x=1');
    const view = JSON.parse(text) as { http: { token: unknown; tokens: unknown }; file: unknown };
    expect(view.http.token).toBe('***');
    expect(view.http.tokens).toEqual([
      { token: '***', scopes: ['read', 'write'], namespaces: ['a'], queues: [] },
    ]);
    expect(view.file).toBeNull();
  });

  it('leaves an unset token as null', () => {
    const view = redactConfig(resolveConfig({}, { baseDir: dir, env: {} }));
    expect(JSON.parse(JSON.stringify(view))).toMatchObject({ http: { token: null, tokens: [] } });
  });

  it('uses a PostgreSQL server store when [store] url is set, and Redis settings for redis queues', async () => {
    await writeConfig(
      '[store]\nurl = "postgres://baton:secret@db:5432/sink"\npool_size = 4\n[queues.q]\nhandler = "./h.js"\nbackend = "redis"\nkey = "metrics-2"\n',
    );
    const config = await loadConfig({ cwd: dir, env: {} });
    expect(config.store).toEqual({
      kind: 'postgres',
      url: 'postgres://baton:secret@db:5432/sink',
      schema: 'baton',
      poolSize: 4,
      statementTimeoutMs: 0,
      queryTimeoutMs: 30_000,
    });
    // The client-side wait stays above the server's statement timeout.
    const slow = resolveConfig(
      { store: { url: 'postgres://h/db', statement_timeout_ms: 60_000, query_timeout_ms: 1_000 } },
      { baseDir: dir, env: {} },
    );
    expect(slow.store).toMatchObject({ statementTimeoutMs: 60_000, queryTimeoutMs: 65_000 });
    expect(config.redis.url).toBe('redis://127.0.0.1:6379');
    expect(config.queues['q']).toMatchObject({ backend: 'redis', key: 'metrics-2', concurrency: 4 });
    const embedded = resolveConfig({ queues: { e: { handler: './h.js' } } }, { baseDir: dir, env: {} });
    expect(embedded.queues['e']?.concurrency).toBe(1);
    expect(JSON.stringify(redactConfig(config))).not.toContain('secret');
  });

  it('resolves a postgres queue with the url of its own database, hidden in the printed config', async () => {
    await writeConfig(
      '[queues.q]\nhandler = "./h.js"\nbackend = "postgres"\nurl = "postgres://baton:secret@queues:5432/q"\n[queues.s]\nhandler = "./h.js"\n',
    );
    const config = await loadConfig({ cwd: dir, env: { BATON_QUEUES__Q__BATCH_SIZE: '50' } });
    expect(config.queues['q']).toMatchObject({
      backend: 'postgres',
      url: 'postgres://baton:secret@queues:5432/q',
      batchSize: 50,
    });
    expect(config.queues['s']).toMatchObject({ backend: 'store', url: undefined });
    expect(JSON.stringify(redactConfig(config))).not.toContain('secret');
  });

  it("takes Baton's schema from [store] schema or BATON_STORE__SCHEMA, and refuses an unsafe name", () => {
    const schemaOf = (store: Record<string, unknown>, env: Record<string, string> = {}): unknown =>
      resolveConfig({ store }, { baseDir: dir, env }).store.schema;
    expect(schemaOf({})).toBe('baton');
    expect(schemaOf({ url: 'postgres://h/db', schema: 'app_baton' })).toBe('app_baton');
    expect(schemaOf({ schema: 'app_baton' }, { BATON_STORE__SCHEMA: 'other' })).toBe('other');
    for (const bad of ['Baton', 'pg_baton', '1baton', 'baton-x', 'a"b', '', 'x'.repeat(41)]) {
      expect(() => schemaOf({ schema: bad }), bad).toThrow(ConfigError);
      expect(() => schemaOf({ schema: bad }), bad).toThrow(/store\.schema/);
    }
  });

  it('refuses a store url that is not postgres:// and an unknown queue backend', () => {
    expect(() =>
      resolveConfig({ store: { url: 'mysql://x' }, queues: {} }, { baseDir: dir, env: {} }),
    ).toThrow(/store\.url/);
    expect(() =>
      resolveConfig({ queues: { q: { handler: './h.js', backend: 'kafka' } } }, { baseDir: dir, env: {} }),
    ).toThrow(/queues\.q\.backend/);
  });

  it('resolves [group] with derived timings, and components', () => {
    const config = resolveConfig(
      {
        store: { url: 'postgres://db/sink' },
        group: { name: 'ingest', elector: 'postgres', lease_ms: 2000 },
        components: { reporter: { module: './reporter.ts', channels: ['jobs'] } },
        queues: { q: { handler: './h.js', run_on: 'primary' } },
      },
      { baseDir: dir, env: {} },
    );
    expect(config.group).toEqual({
      name: 'ingest',
      elector: 'postgres',
      url: 'postgres://db/sink', // the store's, resolved once here
      leaseMs: 2000,
      renewDeadlineMs: 1200,
      heartbeatMs: 500,
      stopTimeoutMs: 800,
      watchPath: undefined,
      failoverFiles: ['standby.signal', 'recovery.signal', 'recovery.conf', 'recovery.done'],
    });
    expect(config.components['reporter']).toEqual({
      name: 'reporter',
      module: path.join(dir, 'reporter.ts'),
      channels: ['jobs'],
    });
    expect(config.queues['q']?.runOn).toBe('primary');
  });

  it('resolves group.url: given, else the store for postgres and pg-recovery, else [redis] url for redis', () => {
    const url = (group: Record<string, unknown>, more: Record<string, unknown> = {}) =>
      resolveConfig({ group: { name: 'g', ...group }, queues: {}, ...more }, { baseDir: dir, env: {} }).group
        ?.url;
    const store = { store: { url: 'postgres://db/sink' } };
    expect(url({ elector: 'postgres' }, store)).toBe('postgres://db/sink');
    expect(url({ elector: 'pg-recovery' }, store)).toBe('postgres://db/sink');
    expect(url({ elector: 'postgres', url: 'postgresql://db/coordination' }, store)).toBe(
      'postgresql://db/coordination',
    );
    // A group database of its own works with an embedded store too.
    expect(url({ elector: 'postgres', url: 'postgres://db/coordination' })).toBe(
      'postgres://db/coordination',
    );
    expect(url({ elector: 'redis' })).toBe('redis://127.0.0.1:6379');
    expect(url({ elector: 'redis' }, { redis: { url: 'redis://cache:6380/2' } })).toBe(
      'redis://cache:6380/2',
    );
    expect(url({ elector: 'redis', url: 'rediss://elect:6379' }, store)).toBe('rediss://elect:6379');
    expect(url({ elector: 'standalone' }, store)).toBeUndefined();
    // The environment sets it like any other key.
    const fromEnv = resolveConfig(
      { group: { name: 'g', elector: 'redis' }, queues: {} },
      { baseDir: dir, env: { BATON_REDIS__URL: 'redis://env:6379' } },
    );
    expect(fromEnv.group?.url).toBe('redis://env:6379');
  });

  it('refuses group timings out of order and a postgres elector without a server', () => {
    const resolve =
      (group: Record<string, unknown>, store: Record<string, unknown> = { url: 'postgres://db/x' }) =>
      () =>
        resolveConfig({ store, group: { name: 'g', ...group }, queues: {} }, { baseDir: dir, env: {} });
    expect(resolve({ lease_ms: 1000, renew_deadline_ms: 1000 })).toThrow(/group\.renew_deadline_ms/);
    expect(resolve({ lease_ms: 1000, renew_deadline_ms: 600, heartbeat_ms: 600 })).toThrow(
      /group\.heartbeat_ms/,
    );
    expect(resolve({ lease_ms: 1000, renew_deadline_ms: 600, stop_timeout_ms: 500 })).toThrow(
      /group\.stop_timeout_ms/,
    );
    expect(resolve({ elector: 'postgres' }, {})).toThrow(/group\.url.*PostgreSQL server/);
    expect(resolve({ elector: 'pg-recovery' }, {})).toThrow(/group\.url.*PostgreSQL server/);
    expect(resolve({ elector: 'redis', url: 'postgres://x' })).toThrow(/group\.url/);
    expect(resolve({ elector: 'postgres', url: 'redis://x' })).toThrow(/group\.url.*postgres:\/\//);
    expect(resolve({ elector: 'standalone', url: 'postgres://x' })).toThrow(/group\.url.*standalone/);
    expect(resolve({ elector: 'raft' })).toThrow(/group\.elector/);
    expect(() => resolveConfig({ group: {}, queues: {} }, { baseDir: dir, env: {} })).toThrow(/group\.name/);
  });
});

describe('[http] hosts, request_timeout_ms and trust_proxy', () => {
  const http = (raw: Record<string, unknown>, env: Record<string, string> = {}) =>
    resolveConfig({ http: raw }, { baseDir: dir, env }).http;
  const refused = (raw: Record<string, unknown>) => configError(() => http(raw));

  it('accept only the loopback names by default on loopback, any name elsewhere (where a token is required)', () => {
    expect(http({}).hosts).toEqual([]);
    expect(http({ host: '::1' }).hosts).toEqual([]);
    expect(http({ host: '0.0.0.0', token: 'secret-token-0123456' }).hosts).toBe('any');
    expect(
      http({ host: '10.0.0.5', token: 'secret-token-0123456', hosts: ['baton.internal'] }).hosts,
    ).toEqual(['baton.internal']);
    expect(http({ hosts: ['a.example', '*'] }).hosts).toBe('any');
    expect(http({ hosts: ['A.Example.', '192.168.1.9', '::1', '[FD00::2]'] }).hosts).toEqual([
      'a.example',
      '192.168.1.9',
      '::1',
      'fd00::2',
    ]);
  });

  it('refuses a host given with a scheme, a port or a path', async () => {
    for (const [entry, shown] of [
      ['http://baton.example.com', '"http://baton.example.com"'],
      ['baton.example.com:8080', '"baton.example.com:8080"'],
      ['baton.example.com/ui', '"baton.example.com/ui"'],
      ['', '""'],
    ] as const) {
      const error = await refused({ hosts: ['ok.example', entry] });
      expect(error.key, entry).toBe('http.hosts[1]');
      expect(error.message).toContain(`expected a host name without scheme or port`);
      expect(error.message).toContain(`got ${shown}`);
    }
    expect((await refused({ hosts: 'baton.example.com' })).key).toBe('http.hosts');
  });

  it('takes request_timeout_ms in milliseconds, 0 for no limit', async () => {
    expect(http({ request_timeout_ms: 0 }).requestTimeoutMs).toBe(0);
    expect(http({}, { BATON_HTTP__REQUEST_TIMEOUT_MS: '120000' }).requestTimeoutMs).toBe(120_000);
    const error = await refused({ request_timeout_ms: -1 });
    expect(error.key).toBe('http.request_timeout_ms');
    expect(error.message).toContain('expected an integer >= 0, got -1');
  });

  it('takes trust_proxy as true, false, or addresses and ranges', async () => {
    expect(http({ trust_proxy: true }).trustProxy).toBe(true);
    const ranges = ['127.0.0.1', '10.0.0.0/8', '::1', 'fd00::/8', 'loopback', 'uniquelocal'];
    expect(http({ trust_proxy: ranges }).trustProxy).toEqual(ranges);
    expect(http({}, { BATON_HTTP__TRUST_PROXY: 'true' }).trustProxy).toBe(true);
    expect(http({}, { BATON_HTTP__TRUST_PROXY: '["10.1.2.3"]' }).trustProxy).toEqual(['10.1.2.3']);
    for (const entry of ['proxy.internal', '10.0.0.0/33', '10.0.0.1/8/1', '::1/129', '*']) {
      const error = await refused({ trust_proxy: [entry] });
      expect(error.key, entry).toBe('http.trust_proxy[0]');
      expect(error.message).toContain('expected an IP address, a CIDR range');
    }
    const wrong = await refused({ trust_proxy: 'yes' });
    expect(wrong.key).toBe('http.trust_proxy');
    expect(wrong.message).toContain('expected true, false or an array of addresses, got "yes"');
  });
});
