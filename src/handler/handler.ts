// The handler plugin contract (Azafea's, in TypeScript): a module per queue exporting `process` or
// `processBatch`, and optionally `schema` (drizzle tables), `payload` (the records' schema), `key` and
// `registerCommands` (per-queue subcommands).
import type { Command } from 'commander';

import type { Logger } from '../log.js';
import type { QueryResult, Tx } from '../store/store.js';
import type { PayloadParser, PayloadSchema } from './payload.js';

export interface HandlerContext {
  readonly queue: string;
  /** Aborts at the handler's deadline (`timeout_ms`) or when the node must stop at once. */
  readonly signal: AbortSignal;
  /**
   * The node's logger, its lines bound to `queue`, and to `batch` (the claim's id) and `record` (the
   * record's id, for `process` or a batch of one) where known.
   */
  readonly log: Logger;
  /** The group's term this node acts under (0 when it is not in a group). */
  readonly term: number;
  /**
   * Inside `tx` (this handler's transaction, or one of its own): throws FencedError when this node is no
   * longer the group's primary, so that a deposed primary's late write rolls back instead of landing.
   * A no-op for a node not in a group.
   */
  assertPrimary(tx: Tx): Promise<void>;
  /** For `process`: the record parsed by the module's `payload` schema; absent when it exports none. */
  readonly payload?: unknown;
  /** For `processBatch`: each record parsed by the `payload` schema, in the order of the records. */
  readonly payloads?: readonly unknown[];
  /** For `process` on an ordered queue: the record's key; absent for a record without one. */
  readonly key?: string;
  /**
   * For `processBatch` on an ordered queue: each record's key (undefined for a record without one), in the
   * order of the records, which come grouped by key.
   */
  readonly keys?: readonly (string | undefined)[];
}

export type ProcessFn = (tx: Tx, record: Buffer, ctx: HandlerContext) => unknown;
export type ProcessBatchFn = (tx: Tx, records: readonly Buffer[], ctx: HandlerContext) => unknown;
/** A record's key, for records published without one (null: no key); see docs/keys.md. */
export type KeyFn = (record: Buffer) => string | null | undefined;

/** What a queue's subcommands may do; it goes through the running node when one owns the store. */
export interface CommandContext {
  readonly queue: string;
  sql(text: string, params?: readonly unknown[]): Promise<QueryResult>;
  publish(records: readonly Buffer[]): Promise<number>;
}

export interface HandlerModule {
  readonly process?: ProcessFn;
  readonly processBatch?: ProcessBatchFn;
  /** The key of a record published without one (for producers that cannot send one). */
  readonly key?: KeyFn;
  /**
   * The schema of the queue's records (zod's, or anything with its safeParse()): each record is read as
   * UTF-8 JSON and must match it, at ingest and before the handler sees it.
   */
  readonly payload?: PayloadSchema;
  /** Drizzle tables (and enums) the handler writes to; `initdb` and `run` create the missing ones. */
  readonly schema?: Readonly<Record<string, unknown>>;
  readonly registerCommands?: (cmd: Command, ctx: CommandContext) => void;
}

/** A handler module after loading and checking. */
export interface Handler {
  readonly queue: string;
  readonly path: string;
  /**
   * Runs the handler over `records` in `tx`; throws if any record fails. `process` is given
   * `recordContext(index)` for records[index] when there is one (its log names the record), else `ctx`.
   */
  run(
    tx: Tx,
    records: readonly Buffer[],
    ctx: HandlerContext,
    recordContext?: (index: number) => HandlerContext,
  ): Promise<void>;
  readonly schema: Readonly<Record<string, unknown>>;
  readonly registerCommands: HandlerModule['registerCommands'];
  /**
   * The module's key(), checked: the key of a record published without one, undefined for none. Throws
   * when key() throws or returns something else than a string, null or undefined (the record is refused).
   */
  readonly key?: ((record: Buffer) => string | undefined) | undefined;
  /** The module's payload schema as a parser of records; undefined when it exports none. */
  readonly payload?: PayloadParser | undefined;
}
