// What operators and the CLI may do to a node's store and queues. A running node implements it; so does a
// local opening of the store when no node runs, and an HTTP client of the node that owns the store.
import type { EventTransport } from '../events/transport.js';
import type { ErrorRecord } from '../queue/backend.js';
import type { MigrationProgress } from '../store/migrate.js';
import type { QueryResult } from '../store/store.js';
import type { StopRequest, TaskRun, TaskRunQuery } from '../tasks/runs.js';
import type { GroupStatus } from '../cluster/types.js';
import type { NewMigration, SchemaUpdate } from './schema.js';

export interface QueueInfo {
  readonly name: string;
  readonly backend: 'store' | 'redis' | 'postgres';
  readonly depth: number;
  readonly inFlight: number;
  /** Records processed by the node answering, since it started; undefined when no node runs. */
  readonly processed: number | undefined;
  /** Failed attempts on the node answering, since it started; undefined when no node runs. */
  readonly failed: number | undefined;
  /** Records waiting in the error queue. */
  readonly errors: number;
}

export interface Admin {
  publish(queue: string, records: readonly Buffer[]): Promise<number>;
  queues(): Promise<QueueInfo[]>;
  listErrors(queue: string, options: { limit: number; afterId?: string }): Promise<ErrorRecord[]>;
  replayErrors(queue: string, options: { ids?: readonly string[]; limit: number }): Promise<number>;
  dropErrors(queue: string, ids: readonly string[]): Promise<number>;
  sql(text: string, params?: readonly unknown[]): Promise<QueryResult>;
  /** Creates the missing tables of the handlers' schemas; returns their names. */
  initdb(): Promise<string[]>;
  /** Applies pending migrations (Baton's and each queue's), then creates tables of queues without any. */
  migrate(onApplied?: MigrationProgress): Promise<SchemaUpdate>;
  /** Writes the next migration of `queue` from its handler's schema and the store. */
  makeMigration(queue: string, message: string): Promise<NewMigration>;
  /** The group as a running node sees it. */
  cluster(): Promise<GroupStatus>;
  /** Manual failover: the group's primary yields, to `to` when named. */
  failover(to?: string): Promise<void>;
  /** Task runs, newest first. */
  taskRuns(query?: TaskRunQuery): Promise<TaskRun[]>;
  /** Asks for a task run to be stopped (the primary stops it); throws UnknownTaskRunError for an unknown id. */
  stopTaskRun(id: string): Promise<StopRequest>;
  /**
   * The event log, for the `events` commands: through the owner node's HTTP API, or on the store opened by
   * this admin. A running node offers its log as `node.events` instead.
   */
  openEvents?(): Promise<EventTransport>;
  close(): Promise<void>;
}
