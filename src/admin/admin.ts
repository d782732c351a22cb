// The admin port: what operators, the CLI and the HTTP API may do to a group's store, queues, tasks,
// workflows and roles. One implementation works on an opened store (StoreAdmin: in a running node, or in a CLI command
// that opened the store itself); HttpAdmin does the same through a node's HTTP API. It does not run
// handlers' batches, elect or fence: the node and the cluster do.
import type { PublishOptions } from '../queue/delay.js';
import type { GroupStatus } from '../cluster/types.js';
import type { EventTransport } from '../events/transport.js';
import type { NewMigration, SchemaUpdate } from '../handler/schema.js';
import type { ErrorPage, ErrorRecord, QueueInfo } from '../queue/backend.js';
import type { MigrationProgress } from '../store/migrate.js';
import type { AppliedTick } from '../schedules/scheduler.js';
import type { ScheduleStatus } from '../schedules/status.js';
import type { QueryResult } from '../store/store.js';
import type { ExecutionQuery, ExecutionStopRequest } from '../tasks/executions.js';
import type { StopRequest, TaskRun, TaskRunQuery } from '../tasks/runs.js';
import type { ExecutionDetail, StartedExecution, WorkflowListing } from '../tasks/workflow-status.js';

/** What a failover request did. */
export interface FailoverResult {
  /** False when nothing had to move (the node named is the primary already). */
  readonly moved: boolean;
  /** The primary when the request was made, when known. */
  readonly primary: string | undefined;
  /** The node asked to take over, when one was named. */
  readonly to: string | undefined;
  /** What happened, in a sentence. */
  readonly message: string;
}

export interface Admin {
  /**
   * Accepts records into a queue; returns how many were stored. With `delayMs` or `runAt`, none of them
   * runs before that time (BadRequestError for both, a negative delay, or one past 365 days).
   */
  publish(queue: string, records: readonly Buffer[], options?: PublishOptions): Promise<number>;
  /** Per queue: the backend's figures, with the running nodes' counters when they answer. */
  queues(): Promise<QueueInfo[]>;
  listErrors(queue: string, options: ErrorPage): Promise<ErrorRecord[]>;
  replayErrors(queue: string, options: { ids?: readonly string[]; limit: number }): Promise<number>;
  /** Deletes error records for good; returns how many existed. */
  dropErrors(queue: string, ids: readonly string[]): Promise<number>;
  sql(text: string, params?: readonly unknown[]): Promise<QueryResult>;
  /** Creates the missing tables of the handlers' schemas; returns their names. */
  initdb(): Promise<string[]>;
  /** Applies pending migrations (Baton's and each queue's), then creates tables of queues without any. */
  migrate(onApplied?: MigrationProgress): Promise<SchemaUpdate>;
  /** Writes the next migration of `queue` from its handler file as it is now and the store. */
  makeMigration(queue: string, message: string): Promise<NewMigration>;
  /** The group as a live node sees it (every live member is tried in turn). */
  cluster(): Promise<GroupStatus>;
  /**
   * Manual failover: the group's primary yields, to `to` when named. Throws UnknownNodeError when `to` is
   * no live member, NotInGroupError without a group; naming the primary itself moves nothing.
   */
  failover(to?: string): Promise<FailoverResult>;
  /** Task runs, newest first. */
  taskRuns(query?: TaskRunQuery): Promise<TaskRun[]>;
  /** Asks for a task run to be stopped (the primary stops it); UnknownTaskRunError for an unknown id. */
  stopTaskRun(id: string): Promise<StopRequest>;
  /**
   * The workflows of the config with their queued and running executions, and the latest executions (newest
   * first; `query` filters both by workflow and namespaces, the executions by state too).
   */
  workflows(query?: ExecutionQuery): Promise<WorkflowListing>;
  /**
   * One execution with its task runs and its workflow's DAG (from this config); UnknownExecutionError for an
   * unknown id, or one outside `namespaces` when given (through HTTP, the token's own namespaces apply).
   */
  execution(id: string, options?: { namespaces?: readonly string[] | undefined }): Promise<ExecutionDetail>;
  /**
   * Asks for a new execution of a workflow: appends its start event, which the primary's rule engine turns
   * into the execution `id` (a new uuid when not given), or queues it, or skips it (over_limit = "skip").
   * UnknownWorkflowError for a workflow the config does not define; BadRequestError for an id that is not
   * one, or that an execution has already.
   */
  startWorkflow(name: string, options?: { id?: string | undefined }): Promise<StartedExecution>;
  /**
   * Asks for an execution to be stopped (the primary stops its runs, then ends it `stopped`); `requested`
   * false when it had ended already. UnknownExecutionError for an unknown id.
   */
  stopExecution(id: string): Promise<ExecutionStopRequest>;
  /** The schedules of the config, and those the store has ticks of that the config no longer names. */
  schedules(): Promise<ScheduleStatus[]>;
  /**
   * Applies one tick of a schedule now, on the primary (asked of any node: a secondary passes it on), recorded
   * like any tick. NotFoundError for a schedule the primary does not have.
   */
  fireSchedule(name: string): Promise<AppliedTick>;
  /** The event log: through a node's HTTP API, or on the opened store. */
  openEvents(): Promise<EventTransport>;
  close(): Promise<void>;
}
