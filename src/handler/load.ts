// Loads a queue's handler module: TypeScript or JavaScript, without a build step (TypeScript goes through
// tsx), and checks that it exports what the contract asks. Every problem is a ConfigError that
// names the queue's `handler` key and the module.
import { existsSync } from 'node:fs';
import { isAbsolute } from 'node:path';

import type { ResolvedConfig } from '../config/types.js';
import { BadRequestError, ConfigError, describeError, UnknownQueueError } from '../errors.js';
import type { Handler, HandlerContext, HandlerModule, KeyFn, ProcessBatchFn, ProcessFn } from './handler.js';
import type { PayloadSchema } from './payload.js';
import { payloadParser } from './payload.js';
import { checkKey } from '../util/record-key.js';
import type { Tx } from '../store/store.js';
import { importModule } from '../util/import-module.js';

/** The handlers of every configured queue, in config order. */
export function loadQueueHandlers(config: ResolvedConfig): Promise<Handler[]> {
  const queues = Object.values(config.queues);
  return Promise.all(queues.map((queue) => loadHandler(queue.name, queue.handler, config.file)));
}

/** The handler of a configured queue, loaded from its file as it is now; UnknownQueueError otherwise. */
export function loadQueueHandler(config: ResolvedConfig, queue: string): Promise<Handler> {
  const queueConfig = config.queues[queue];
  if (!queueConfig) throw new UnknownQueueError(queue, Object.keys(config.queues));
  return loadHandler(queue, queueConfig.handler, config.file);
}

/** Loads and checks the handler of `queue`; `file` is the config file that named it, for error messages. */
export async function loadHandler(queue: string, path: string, file?: string): Promise<Handler> {
  const where = { key: `queues.${queue}.handler`, ...(file ? { file } : {}) };
  const local = isAbsolute(path);
  if (local && !existsSync(path)) throw new ConfigError(`handler module not found: ${path}`, where);

  let exports: unknown;
  try {
    exports = await importModule(path);
  } catch (error) {
    throw new ConfigError(`cannot load handler module ${path}: ${describeError(error)}`, {
      ...where,
      cause: error,
    });
  }
  const module = exports as HandlerModule;
  const process = typeof module.process === 'function' ? module.process : undefined;
  const processBatch = typeof module.processBatch === 'function' ? module.processBatch : undefined;
  if (!process && !processBatch) {
    throw new ConfigError(`handler module ${path} exports neither process() nor processBatch()`, where);
  }
  if (module.registerCommands !== undefined && typeof module.registerCommands !== 'function') {
    throw new ConfigError(`handler module ${path}: registerCommands is not a function`, where);
  }
  if (module.key !== undefined && typeof module.key !== 'function') {
    throw new ConfigError(
      `handler module ${path}: key must be a function (record: Buffer) => string | null`,
      where,
    );
  }
  const payload: unknown = module.payload;
  if (payload !== undefined && !hasSafeParse(payload)) {
    throw new ConfigError(
      `handler module ${path}: payload must be a schema with a safeParse() function (a zod schema)`,
      where,
    );
  }
  const schema = module.schema ?? {};
  if (typeof schema !== 'object' || schema === null) {
    throw new ConfigError(`handler module ${path}: schema must be an object of drizzle tables`, where);
  }
  return {
    queue,
    path,
    run: makeRun(process, processBatch),
    schema,
    registerCommands: module.registerCommands,
    key: module.key === undefined ? undefined : checkedKey(module.key, path),
    payload: payload === undefined ? undefined : payloadParser(payload),
  };
}

function hasSafeParse(value: unknown): value is PayloadSchema {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as { safeParse?: unknown }).safeParse === 'function'
  );
}

/** The module's key() made to return a checked key or undefined, naming the module when it misbehaves. */
function checkedKey(key: KeyFn, path: string): (record: Buffer) => string | undefined {
  return (record) => {
    let value: unknown;
    try {
      value = key(record);
    } catch (error) {
      throw new BadRequestError(`the key() of handler module ${path} failed: ${describeError(error)}`);
    }
    if (value === null || value === undefined) return undefined;
    return checkKey(value, `the key() of handler module ${path}`);
  };
}

function makeRun(process: ProcessFn | undefined, processBatch: ProcessBatchFn | undefined): Handler['run'] {
  if (processBatch) {
    return async (tx: Tx, records: readonly Buffer[], ctx: HandlerContext) => {
      await processBatch(tx, records, ctx);
    };
  }
  const one = process as ProcessFn;
  return async (
    tx: Tx,
    records: readonly Buffer[],
    ctx: HandlerContext,
    recordContext?: (index: number) => HandlerContext,
  ) => {
    for (const [index, record] of records.entries()) await one(tx, record, recordContext?.(index) ?? ctx);
  };
}
