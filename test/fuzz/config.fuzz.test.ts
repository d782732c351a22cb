// Property-based fuzzing of the configuration: arbitrary values, a valid config with one key set to a random
// value, random environment overrides, and random TOML text. Loading either succeeds or throws a
// ConfigError that names where the problem is; nothing else escapes (no TypeError from deep inside).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadConfig, resolveConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

const RUNS = Number(process.env['FUZZ_RUNS'] ?? 300);
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'baton-fuzz-config-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const BASE = {
  node: { name: 'n', data_dir: 'data', shutdown_timeout_ms: 1000 },
  http: { host: '127.0.0.1', port: 8080, tokens: [{ token: 'abcdefgh-1234', namespaces: ['a'] }] },
  store: { url: 'postgres://localhost/x', pool_size: 3 },
  queues: { ping: { handler: './h.ts', batch_size: 10, backend: 'redis' } },
  group: { name: 'g', elector: 'postgres', lease_ms: 2000 },
  events: { retention_days: 3 },
  tasks: { build: { command: 'true' } },
  rules: [{ on: { key: 'go' }, action: 'start', task: 'build' }],
};

/** Every path of scalars, arrays and tables in `value` (including the tables themselves). */
function paths(value: unknown, prefix: readonly (string | number)[] = []): Array<Array<string | number>> {
  const here = prefix.length > 0 ? [[...prefix]] : [];
  if (Array.isArray(value))
    return [...here, ...value.flatMap((item, index) => paths(item, [...prefix, index]))];
  if (typeof value === 'object' && value !== null) {
    return [...here, ...Object.entries(value).flatMap(([key, item]) => paths(item, [...prefix, key]))];
  }
  return here;
}

function withValue(base: unknown, path: ReadonlyArray<string | number>, value: unknown): unknown {
  const copy = structuredClone(base) as Record<string | number, unknown>;
  let cursor = copy;
  for (const step of path.slice(0, -1)) cursor = cursor[step] as Record<string | number, unknown>;
  cursor[path.at(-1) as string | number] = value;
  return copy;
}

const anyValue = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.array(fc.oneof(fc.string({ maxLength: 8 }), fc.integer()), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ maxLength: 8 }), fc.integer()), {
    maxKeys: 3,
  }),
  fc.date(),
);

function loadsOrExplains(load: () => unknown): void {
  try {
    load();
  } catch (error) {
    expect(error, String(error)).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message.length).toBeGreaterThan(0);
  }
}

describe('fuzzing the configuration', () => {
  it('refuses arbitrary values with a ConfigError only', () => {
    fc.assert(
      fc.property(fc.anything(), (raw) =>
        loadsOrExplains(() => resolveConfig(raw, { baseDir: dir, env: {} })),
      ),
      { numRuns: RUNS },
    );
  });

  it('names the key when one key of a valid config gets a random value', () => {
    expect(() => resolveConfig(BASE, { baseDir: dir, env: {} })).not.toThrow();
    const keyPaths = paths(BASE);
    fc.assert(
      fc.property(fc.constantFrom(...keyPaths), anyValue, (path, value) => {
        const raw = withValue(BASE, path, value);
        try {
          resolveConfig(raw, { baseDir: dir, env: {} });
        } catch (error) {
          expect(error, String(error)).toBeInstanceOf(ConfigError);
          // The message points into the config: the top-level table at least.
          expect((error as ConfigError).message).toContain(String(path[0]));
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('refuses bad environment overrides with a ConfigError naming the variable or key', () => {
    const name = fc.constantFrom(
      'BATON_HTTP__PORT',
      'BATON_QUEUES__PING__BATCH_SIZE',
      'BATON_NODE__NAME',
      'BATON_GROUP__LEASE_MS',
      'BATON_EVENTS__ENABLED',
      'BATON_STORE__URL',
      'BATON_NOPE',
      'BATON_QUEUES__PING__NOPE',
    );
    fc.assert(
      fc.property(fc.dictionary(name, fc.string({ maxLength: 20 }), { maxKeys: 3 }), (env) =>
        loadsOrExplains(() => resolveConfig(BASE, { baseDir: dir, env })),
      ),
      { numRuns: RUNS },
    );
  });

  it('refuses random TOML text with a ConfigError naming the file', async () => {
    const fragments = fc.constantFrom(
      '[node]\n',
      '[http]\nport = 8080\n',
      'port = "x"\n',
      '[queues.ping]\nhandler = "./h.ts"\n',
      '[[rules]]\n',
      'on = { key = "k" }\n',
      '= =\n',
      '[[http.tokens]]\ntoken = "short"\n',
      '"\n',
      '[queues."a b"]\n',
      '__proto__ = 1\n',
      '[tasks.t]\ncommand = "x"\nmodule = "y"\n',
    );
    const file = join(dir, 'fuzz.toml');
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fragments, fc.string({ maxLength: 20 })), { maxLength: 8 }),
        async (parts) => {
          await writeFile(file, parts.join(''));
          try {
            await loadConfig({ file, cwd: dir, env: {} });
          } catch (error) {
            expect(error, String(error)).toBeInstanceOf(ConfigError);
            expect((error as ConfigError).message).toContain(file);
          }
        },
      ),
      { numRuns: RUNS },
    );
  });
});
