// The admin operations through a node's HTTP API: the CLI's path while a node owns the embedded store, and
// the way to reach a group's live members. Answers are parsed with the codecs of their types and errors
// come back typed (HttpClient). `make-migration` loads the handler here, from the file as it is now, and
// reads the store through the node's `sql`.
import { z } from 'zod';

import { clusterReply } from '../cluster/wire.js';
import type { GroupStatus } from '../cluster/types.js';
import type { ResolvedConfig } from '../config/types.js';
import { UnknownErrorRecordError, UnknownQueueError } from '../errors.js';
import { HttpEventTransport } from '../events/http-transport.js';
import type { EventTransport } from '../events/transport.js';
import { loadQueueHandler } from '../handler/load.js';
import type { NewMigration, SchemaUpdate } from '../handler/schema.js';
import { makeMigration } from '../handler/schema.js';
import type { ErrorPage, ErrorRecord, QueueInfo } from '../queue/backend.js';
import type { PublishOptions } from '../queue/delay.js';
import { DELAY_HEADER, delayAt, ENVELOPE_HEADER, RUN_AT_HEADER } from '../queue/delay.js';
import { IDEMPOTENCY_HEADER, KEY_HEADER, toRecordOptions } from '../queue/record-options.js';
import { anyValue, valueAt } from '../util/per-record.js';
import type { CountersByQueue } from '../queue/processor.js';
import { countersReply, errorsReply, queuesReply } from '../queue/wire.js';
import type { QueryResult } from '../store/store.js';
import { queryResultReply } from '../store/wire.js';
import type { ExecutionQuery, ExecutionStopRequest } from '../tasks/executions.js';
import type { StopRequest, TaskRun, TaskRunQuery } from '../tasks/runs.js';
import type { ExecutionDetail, StartedExecution, WorkflowListing } from '../tasks/workflow-status.js';
import {
  executionDetailReply,
  executionStopReply,
  startedReply,
  workflowsReply,
} from '../tasks/workflow-wire.js';
import type { AppliedTick } from '../schedules/scheduler.js';
import type { ScheduleStatus } from '../schedules/status.js';
import { firedReply, schedulesReply } from '../schedules/wire.js';
import { stopReply, taskRunsReply } from '../tasks/wire.js';
import type { RequestOptions } from '../util/http-client.js';
import { HttpClient } from '../util/http-client.js';
import type { Admin, FailoverResult } from './admin.js';

const acceptedReply = z.object({ accepted: z.number() });
const replayedReply = z.object({ replayed: z.number() });
const droppedReply = z.object({ dropped: z.number() });
const createdReply = z.object({ created: z.array(z.string()) });
const migratedReply = z.object({
  migrated: z.array(z.string()),
  created: z.array(z.string()),
  warnings: z.array(z.string()).default([]),
});
const failoverReply = z
  .object({
    moved: z.boolean(),
    primary: z.string().nullable(),
    to: z.string().nullable(),
    message: z.string(),
  })
  .transform((reply): FailoverResult => ({
    moved: reply.moved,
    primary: reply.primary ?? undefined,
    to: reply.to ?? undefined,
    message: reply.message,
  }));

export class HttpAdmin implements Admin {
  readonly #client: HttpClient;
  readonly #token: string | undefined;
  readonly #config: ResolvedConfig | undefined;

  /** `config` (the caller's) is needed by makeMigration only: it names the handler file and its folder. */
  constructor(
    base: string,
    options: { token?: string | undefined; timeoutMs?: number; config?: ResolvedConfig } = {},
  ) {
    this.#client = new HttpClient(base, options);
    this.#token = options.token;
    this.#config = options.config;
  }

  get address(): string {
    return this.#client.base;
  }

  async publish(queue: string, records: readonly Buffer[], options?: PublishOptions): Promise<number> {
    // Checked here too, so that bad options fail the same way in-process and remote, before any request.
    const { delays, keys, ids } = toRecordOptions(options, records.length);
    const delay = delayAt(delays, 0);
    const headers: Record<string, string> = {
      ...(delay === undefined
        ? {}
        : 'delayMs' in delay
          ? { [DELAY_HEADER]: String(delay.delayMs) }
          : { [RUN_AT_HEADER]: delay.runAt.toISOString() }),
      ...(typeof keys === 'string' ? { [KEY_HEADER]: keys } : {}),
    };
    const single = records.length === 1 ? records[0] : undefined;
    const id = single ? valueAt(ids, 0) : undefined;
    let body: RequestOptions;
    if (single) {
      const idHeader = id === undefined ? {} : { [IDEMPOTENCY_HEADER]: id };
      body = { body: single, contentType: 'application/octet-stream', headers: { ...headers, ...idHeader } };
    } else if (anyValue(ids)) {
      // One envelope per line, each with its own id (and the bytes in base64: any byte may be in a record).
      const lines = records.map((record, index) =>
        JSON.stringify({ record_base64: record.toString('base64'), id: valueAt(ids, index) }),
      );
      body = {
        body: Buffer.from(`${lines.join('\n')}\n`),
        contentType: 'application/x-ndjson',
        headers: { ...headers, [ENVELOPE_HEADER]: 'json' },
      };
    } else {
      body = {
        body: Buffer.concat(records.flatMap((record) => [record, Buffer.from('\n')])),
        contentType: 'application/x-ndjson',
        headers,
      };
    }
    return (await this.#client.call(acceptedReply, 'POST', `${queuePath(queue)}/records`, body)).accepted;
  }

  async queues(): Promise<QueueInfo[]> {
    return (await this.#client.call(queuesReply, 'GET', '/v1/queues')).queues;
  }

  listErrors(queue: string, options: ErrorPage): Promise<ErrorRecord[]> {
    const query = new URLSearchParams({
      limit: String(options.limit),
      ...(options.afterId ? { after: options.afterId } : {}),
      ...(options.beforeId ? { before: options.beforeId } : {}),
    });
    return this.#client.call(errorsReply, 'GET', `${queuePath(queue)}/errors?${query.toString()}`);
  }

  async replayErrors(queue: string, options: { ids?: readonly string[]; limit: number }): Promise<number> {
    const reply = await this.#client.call(replayedReply, 'POST', `${queuePath(queue)}/errors/replay`, {
      json: { limit: options.limit, ...(options.ids ? { ids: options.ids } : {}) },
    });
    return reply.replayed;
  }

  async dropErrors(queue: string, ids: readonly string[]): Promise<number> {
    let dropped = 0;
    for (const id of ids) {
      const path = `${queuePath(queue)}/errors/${encodeURIComponent(id)}`;
      try {
        dropped += (await this.#client.call(droppedReply, 'DELETE', path)).dropped;
      } catch (error) {
        if (!(error instanceof UnknownErrorRecordError)) throw error;
      }
    }
    return dropped;
  }

  sql(text: string, params: readonly unknown[] = []): Promise<QueryResult> {
    return this.#client.call(queryResultReply, 'POST', '/v1/sql', { json: { sql: text, params } });
  }

  async initdb(): Promise<string[]> {
    return (await this.#client.call(createdReply, 'POST', '/v1/initdb', { json: {} })).created;
  }

  migrate(): Promise<SchemaUpdate> {
    return this.#client.call(migratedReply, 'POST', '/v1/migrate', { json: {} });
  }

  /** The handler is loaded here, from the file as it is now; the store is read through the node's `sql`. */
  async makeMigration(queue: string, message: string): Promise<NewMigration> {
    const config = this.#config;
    if (!config) throw new UnknownQueueError(queue, []);
    const handler = await loadQueueHandler(config, queue);
    const reader = { query: (text: string, params?: readonly unknown[]) => this.sql(text, params) };
    return makeMigration(reader, config, handler, message);
  }

  /** The node's own processed and failed counts per queue (not part of the Admin port). */
  counters(): Promise<CountersByQueue> {
    return this.#client.call(countersReply, 'GET', '/v1/queues/counters');
  }

  cluster(): Promise<GroupStatus> {
    return this.#client.call(clusterReply, 'GET', '/v1/cluster');
  }

  failover(to?: string): Promise<FailoverResult> {
    return this.#client.call(failoverReply, 'POST', '/v1/cluster/failover', {
      json: to === undefined ? {} : { to },
    });
  }

  async taskRuns(query: TaskRunQuery = {}): Promise<TaskRun[]> {
    const search = new URLSearchParams();
    if (query.limit !== undefined) search.set('limit', String(query.limit));
    if (query.state !== undefined) search.set('state', query.state);
    if (query.task !== undefined) search.set('task', query.task);
    return (await this.#client.call(taskRunsReply, 'GET', `/v1/tasks?${search.toString()}`)).runs;
  }

  stopTaskRun(id: string): Promise<StopRequest> {
    return this.#client.call(stopReply, 'POST', `/v1/tasks/runs/${encodeURIComponent(id)}/stop`, {
      json: {},
    });
  }

  /** The token's namespaces apply: `query.namespaces` is not sent. */
  workflows(query: ExecutionQuery = {}): Promise<WorkflowListing> {
    const search = new URLSearchParams();
    if (query.limit !== undefined) search.set('limit', String(query.limit));
    if (query.state !== undefined) search.set('state', query.state);
    if (query.workflow !== undefined) search.set('workflow', query.workflow);
    return this.#client.call(workflowsReply, 'GET', `/v1/workflows?${search.toString()}`);
  }

  /** The token's namespaces apply, not `options.namespaces`. */
  execution(id: string): Promise<ExecutionDetail> {
    return this.#client.call(executionDetailReply, 'GET', executionPath(id));
  }

  startWorkflow(name: string, options: { id?: string | undefined } = {}): Promise<StartedExecution> {
    return this.#client.call(startedReply, 'POST', `/v1/workflows/${encodeURIComponent(name)}/start`, {
      json: options.id === undefined ? {} : { id: options.id },
    });
  }

  stopExecution(id: string): Promise<ExecutionStopRequest> {
    return this.#client.call(executionStopReply, 'POST', `${executionPath(id)}/stop`, { json: {} });
  }

  async schedules(): Promise<ScheduleStatus[]> {
    return (await this.#client.call(schedulesReply, 'GET', '/v1/schedules')).schedules;
  }

  fireSchedule(name: string): Promise<AppliedTick> {
    return this.#client.call(firedReply, 'POST', `/v1/schedules/${encodeURIComponent(name)}/fire`, {
      json: {},
    });
  }

  openEvents(): Promise<EventTransport> {
    return Promise.resolve(new HttpEventTransport(this.#client.base, this.#token));
  }

  async close(): Promise<void> {}
}

function queuePath(queue: string): string {
  return `/v1/queues/${encodeURIComponent(queue)}`;
}

function executionPath(id: string): string {
  return `/v1/workflows/executions/${encodeURIComponent(id)}`;
}
