// The admin operations on an opened store: the one implementation, used by a running node (which adds its
// ingest path, its live counters, its event log and its place in the group) and by CLI commands that open
// the store themselves (which reach the group's live members for what only a node knows).
import { randomUUID } from 'node:crypto';

import type { GroupStatus } from '../cluster/types.js';
import type { ResolvedConfig } from '../config/types.js';
import { EventLog } from '../events/log.js';
import type { EventTransport } from '../events/transport.js';
import { LocalEventTransport } from '../events/transport.js';
import type { Handler } from '../handler/handler.js';
import { loadQueueHandler, loadQueueHandlers } from '../handler/load.js';
import type { NewMigration, SchemaUpdate } from '../handler/schema.js';
import { makeMigration, updateSchema } from '../handler/schema.js';
import { createMissingTables } from '../handler/tables.js';
import { BadRequestError, UnknownExecutionError, UnknownWorkflowError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ErrorPage, ErrorRecord, QueueInfo } from '../queue/backend.js';
import type { Backends } from '../queue/backends.js';
import type { PublishOptions } from '../queue/delay.js';
import type { RecordOptions } from '../queue/record-options.js';
import { toRecordOptions } from '../queue/record-options.js';
import type { IngestResult } from '../queue/ingest.js';
import type { CountersByQueue } from '../queue/processor.js';
import type { MigrationProgress } from '../store/migrate.js';
import type { AppliedTick } from '../schedules/scheduler.js';
import type { ScheduleStatus } from '../schedules/status.js';
import { scheduleStatuses } from '../schedules/status.js';
import type { QueryResult } from '../store/store.js';
import type { ExecutionQuery, ExecutionStopRequest } from '../tasks/executions.js';
import {
  getExecution,
  listExecutions,
  openExecutionCounts,
  requestExecutionStop,
} from '../tasks/executions.js';
import type { StopRequest, TaskRun, TaskRunQuery } from '../tasks/runs.js';
import { listTaskRuns, requestStop } from '../tasks/runs.js';
import type { ExecutionDetail, StartedExecution, WorkflowListing } from '../tasks/workflow-status.js';
import { executionDag, workflowStatuses } from '../tasks/workflow-status.js';
import { EXECUTION_ID, startKey } from '../tasks/workflows.js';
import type { Admin, FailoverResult } from './admin.js';

/** The group as reached from here: a node's own place in it, or its live members asked over HTTP. */
export interface GroupAccess {
  status(): Promise<GroupStatus>;
  failover(to?: string): Promise<FailoverResult>;
  /** Processed and failed records per queue, summed over the nodes that answer; empty when none does. */
  counters(): Promise<CountersByQueue>;
  /** One tick of a schedule now, applied by the primary (this node's scheduler when it is the primary). */
  fireSchedule(name: string): Promise<AppliedTick>;
}

/** What a running node adds to the admin operations. */
export interface AdminNode {
  /** The node's ingest path (inline on the embedded store when it can; delayed records are published). */
  ingest(queue: string, records: readonly Buffer[], options?: RecordOptions): Promise<IngestResult>;
  /** The handlers as the node loaded them. */
  readonly handlers: readonly Handler[];
  /** The node's event log, when `[events] enabled`. */
  readonly events: EventLog | undefined;
  /** Called after a stop of a task run or an execution was requested (the primary's rule engine then looks at once). */
  stopRequested(): void;
}

export interface StoreAdminOptions {
  readonly config: ResolvedConfig;
  readonly backends: Backends;
  readonly group: GroupAccess;
  readonly log: Logger;
  /** The running node of this process, if any. */
  readonly node?: AdminNode;
  /** Releases what was opened for this admin alone (a CLI command's backends), after its own parts. */
  readonly release?: () => Promise<void>;
}

/** Task runs of one execution shown with it, at most (its oldest are left out beyond). */
const MAX_EXECUTION_RUNS = 10_000;

/** An ad-hoc statement on the embedded store that runs this long is logged (it held the whole process). */
const EMBEDDED_SQL_WARN_MS = 1_000;

export class StoreAdmin implements Admin {
  readonly #config: ResolvedConfig;
  readonly #backends: Backends;
  readonly #group: GroupAccess;
  readonly #log: Logger;
  readonly #node: AdminNode | undefined;
  readonly #release: (() => Promise<void>) | undefined;
  /** An event log this admin opened itself (no node here), closed with it. */
  #events: EventLog | undefined;

  constructor(options: StoreAdminOptions) {
    this.#config = options.config;
    this.#backends = options.backends;
    this.#group = options.group;
    this.#log = options.log;
    this.#node = options.node;
    this.#release = options.release;
  }

  async publish(queue: string, records: readonly Buffer[], options?: PublishOptions): Promise<number> {
    const checked = toRecordOptions(options, records.length);
    if (this.#node) return (await this.#node.ingest(queue, records, checked)).accepted;
    return this.#backends.backendFor(queue).publish(queue, records, checked);
  }

  async queues(): Promise<QueueInfo[]> {
    const counting = this.#group.counters();
    return Promise.all(
      Object.keys(this.#config.queues).map(async (name): Promise<QueueInfo> => {
        const backend = this.#backends.backendFor(name);
        const [stats, counters] = await Promise.all([backend.stats(name), counting]);
        const { processed, failed } = counters.get(name) ?? {};
        return { name, backend: backend.kind, ...stats, processed, failed };
      }),
    );
  }

  listErrors(queue: string, options: ErrorPage): Promise<ErrorRecord[]> {
    return this.#backends.backendFor(queue).listErrors(queue, options);
  }

  replayErrors(queue: string, options: { ids?: readonly string[]; limit: number }): Promise<number> {
    return this.#backends.backendFor(queue).replayErrors(queue, options);
  }

  dropErrors(queue: string, ids: readonly string[]): Promise<number> {
    return this.#backends.backendFor(queue).dropErrors(queue, ids);
  }

  /**
   * On a server store the statement is ended by the server's limit (statement_timeout_ms). The embedded store
   * has none that fires (PGlite runs in this thread and its timers never do): a long statement holds the
   * whole process, so it is reported when it is over.
   */
  async sql(text: string, params: readonly unknown[] = []): Promise<QueryResult> {
    const store = this.#backends.store;
    if (store.kind !== 'pglite') return store.query(text, params);
    const started = performance.now();
    try {
      return await store.query(text, params);
    } finally {
      const heldMs = Math.round(performance.now() - started);
      if (heldMs >= EMBEDDED_SQL_WARN_MS) {
        this.#log.warn(
          { heldMs, sql: text.length > 200 ? `${text.slice(0, 200)}…` : text },
          `sql: one statement held the embedded store, and this process, for ${heldMs} ms`,
        );
      }
    }
  }

  async initdb(): Promise<string[]> {
    return createMissingTables(this.#backends.store, await this.#handlers());
  }

  async migrate(onApplied?: MigrationProgress): Promise<SchemaUpdate> {
    const update = await updateSchema(this.#backends.store, this.#config, await this.#handlers(), onApplied);
    // Baton's own were applied when the store was opened: for this command, not at a node's start (whose log
    // reported them then).
    const opened = this.#node ? [] : this.#backends.migrated;
    return { ...update, migrated: [...opened, ...update.migrated] };
  }

  /** Loads the handler file as it is now (not as a running node loaded it), then diffs it with the store. */
  async makeMigration(queue: string, message: string): Promise<NewMigration> {
    const handler = await loadQueueHandler(this.#config, queue);
    return makeMigration(this.#backends.store, this.#config, handler, message);
  }

  cluster(): Promise<GroupStatus> {
    return this.#group.status();
  }

  failover(to?: string): Promise<FailoverResult> {
    return this.#group.failover(to);
  }

  schedules(): Promise<ScheduleStatus[]> {
    return scheduleStatuses(this.#backends.store, this.#config.schedules);
  }

  fireSchedule(name: string): Promise<AppliedTick> {
    return this.#group.fireSchedule(name);
  }

  taskRuns(query: TaskRunQuery = {}): Promise<TaskRun[]> {
    return listTaskRuns(this.#backends.store, query);
  }

  /** Recorded in the store: the group's primary carries it out (a node started later, when none runs). */
  async stopTaskRun(id: string): Promise<StopRequest> {
    const request = await requestStop(this.#backends.store, id);
    if (request.requested) this.#node?.stopRequested();
    return request;
  }

  async workflows(query: ExecutionQuery = {}): Promise<WorkflowListing> {
    const store = this.#backends.store;
    const counts = await openExecutionCounts(store);
    const executions = await listExecutions(store, query);
    return { workflows: workflowStatuses(this.#config.workflows, counts, query), executions };
  }

  async execution(
    id: string,
    options: { namespaces?: readonly string[] | undefined } = {},
  ): Promise<ExecutionDetail> {
    const store = this.#backends.store;
    const execution = await getExecution(store, id);
    // A namespace-limited caller sees only executions of its namespaces; the others do not exist.
    if (options.namespaces && !options.namespaces.includes(execution.namespace)) {
      throw new UnknownExecutionError(id);
    }
    const runs = await listTaskRuns(store, { execution: id, limit: MAX_EXECUTION_RUNS });
    return {
      execution,
      runs: runs.reverse(),
      dag: executionDag(this.#config.workflows[execution.workflow], execution),
    };
  }

  /** The start event goes to the event log (the node's, or one opened on the store): the primary follows it. */
  async startWorkflow(name: string, options: { id?: string | undefined } = {}): Promise<StartedExecution> {
    const workflow = this.#config.workflows[name];
    if (!workflow) throw new UnknownWorkflowError(name, Object.keys(this.#config.workflows));
    const id = options.id ?? randomUUID();
    if (!EXECUTION_ID.test(id)) {
      throw new BadRequestError(
        `invalid execution id ${JSON.stringify(id)}: expected 1 to 128 letters, digits, "_", ".", ":" or "-", starting with a letter or digit`,
      );
    }
    const taken = await getExecution(this.#backends.store, id).catch((error: unknown) => {
      if (error instanceof UnknownExecutionError) return undefined;
      throw error;
    });
    if (taken) {
      throw new BadRequestError(`execution "${id}" exists already (of workflow ${taken.workflow})`);
    }
    const events = await this.openEvents();
    const [event] = await events.append([
      {
        namespace: workflow.namespace,
        key: startKey(name),
        sender: 'baton',
        context: JSON.stringify({ startExecution: id }),
      },
    ]);
    return { workflow: name, execution: id, offset: event?.offset ?? 0 };
  }

  /** Recorded in the store, as a task run's stop: the group's primary carries it out. */
  async stopExecution(id: string): Promise<ExecutionStopRequest> {
    const request = await requestExecutionStop(this.#backends.store, id);
    if (request.requested) this.#node?.stopRequested();
    return request;
  }

  /** The node's event log, or one opened on the store (on a server store it hears running nodes' appends). */
  async openEvents(): Promise<EventTransport> {
    const running = this.#node?.events;
    if (running) return new LocalEventTransport(running);
    if (!this.#events) {
      const events = new EventLog(this.#backends.store, this.#log);
      await events.start();
      this.#events = events;
    }
    return new LocalEventTransport(this.#events);
  }

  /** Closes what this admin opened itself; a node's backends are the node's to close. */
  async close(): Promise<void> {
    await this.#events?.close();
    this.#events = undefined;
    await this.#release?.();
  }

  #handlers(): Promise<readonly Handler[]> {
    return this.#node ? Promise.resolve(this.#node.handlers) : loadQueueHandlers(this.#config);
  }
}
