// Checked by `npm run typecheck`, never run: a config written in code is typed, so that a misspelt key or a
// value of the wrong type fails to compile. Each `@ts-expect-error` fails the check if its line compiles.
import type { ConfigInput, ResolvedConfig } from '../../src/index.js';
import { defineConfig, loadConfig, startNode } from '../../src/index.js';

export const valid: ConfigInput = defineConfig({
  node: { data_dir: './.baton' },
  log: { level: 'debug', format: 'pretty' },
  queues: { ping: { handler: './handlers/ping.ts', batch_size: 100, backend: 'redis' } },
});

export const misspeltTable = defineConfig({
  // @ts-expect-error: "queus" is no key of the config
  queus: { ping: { handler: './handlers/ping.ts' } },
});

export const misspeltKey = defineConfig({
  // @ts-expect-error: "batchsize" is no key of a queue ("batch_size" is)
  queues: { ping: { handler: './handlers/ping.ts', batchsize: 100 } },
});

export const camelCase = defineConfig({
  // @ts-expect-error: the input has the file's snake_case keys, not the resolved config's camelCase
  node: { dataDir: './.baton' },
});

export const wrongType = defineConfig({
  // @ts-expect-error: a port is a number
  http: { port: '8080' },
});

export const unknownChoice = defineConfig({
  // @ts-expect-error: "kafka" is no backend
  queues: { ping: { handler: './handlers/ping.ts', backend: 'kafka' } },
});

// @ts-expect-error: a queue needs its handler
export const missingHandler = defineConfig({ queues: { ping: { batch_size: 10 } } });

/** startNode takes either form, and checks an object literal as defineConfig does. */
export async function startEither(resolved: ResolvedConfig): Promise<void> {
  await (await startNode(resolved)).stop();
  await (await startNode(valid)).stop();
  await (await startNode(await loadConfig({ cwd: '.', env: {} }))).stop();
  await (await startNode({ queues: { ping: { handler: './handlers/ping.ts' } } })).stop();
  // @ts-expect-error: "queus" is in neither form
  await (await startNode({ queus: {} })).stop();
  // @ts-expect-error: "batchsize" is in neither form
  await (await startNode({ queues: { ping: { handler: './h.ts', batchsize: 1 } } })).stop();
}
