// The public API of baton-runtime. Everything not exported here is internal and may change.
export { BatonNode } from './node/node.js';
export type { NodeState } from './node/node.js';
export { startNode } from './node/start.js';
export type { StartNodeOptions } from './node/start.js';
export type { Admin, FailoverResult } from './admin/admin.js';
export { HttpAdmin } from './admin/http-admin.js';
export { loadConfig, resolveConfig } from './config/load.js';
export { defineConfig } from './config/schema.js';
export type { WorkflowDefinition, WorkflowTaskDefinition } from './tasks/define.js';
export { defineWorkflow } from './tasks/define.js';
export type { EnqueueOptions, OutboxClient, OutboxDrizzle, OutboxRecord } from './queue/outbox.js';
export { enqueue } from './queue/outbox.js';
export type { OutboxEvent, SendEventOptions } from './events/outbox.js';
export { sendEvent } from './events/outbox.js';
export type { ConfigInput } from './config/schema.js';
export type {
  ResolvedConfig,
  QueueConfig,
  HttpConfig,
  NodeConfig,
  StoreConfig,
  LogLevel,
  LogFormat,
} from './config/types.js';
export type { Tx, QueryResult, Row } from './store/store.js';
export type {
  HandlerModule,
  HandlerContext,
  CommandContext,
  ProcessFn,
  ProcessBatchFn,
} from './handler/handler.js';
export type { HandlerDefinition } from './handler/define.js';
export { defineHandler } from './handler/define.js';
export type { PayloadOf, PayloadSchema } from './handler/payload.js';
export type { ErrorRecord, QueueInfo, QueueStats } from './queue/backend.js';
export type { Role, RoleChange, LeaderWatchEvent, LeaderWatchEventType, Member } from './cluster/types.js';
export type { RoleChangeCallback, LeaderWatchCallback } from './cluster/role-events.js';
export type { GroupStatus, Failover } from './cluster/types.js';
export { primaryOnly } from './http/routes/cluster.js';
export { defineComponent } from './components/component.js';
export type { Component, ComponentContext, RunOn } from './components/component.js';
export { createNotifyProcessor } from './components/notify-processor.js';
export type { NotifyProcessorOptions, NotifyProcessFn } from './components/notify-processor.js';
export type { ComponentStatus, ComponentState } from './components/supervisor.js';
export type { RouteRegistrar } from './http/server.js';
export type { IngestResult } from './queue/ingest.js';
export type { PublishOptions } from './queue/delay.js';
export { MAX_DELAY_MS } from './queue/delay.js';
export type { TaskContext, TaskFunction } from './tasks/process.js';
export type { TaskRun, TaskRunState, TaskRunQuery, StopRequest } from './tasks/runs.js';
export type { Execution, ExecutionQuery, ExecutionState, ExecutionStopRequest } from './tasks/executions.js';
export type {
  DagTask,
  ExecutionDetail,
  StartedExecution,
  WorkflowListing,
  WorkflowStatus,
  WorkflowTaskStatus,
} from './tasks/workflow-status.js';
export { EventClient, NotificationClient } from './events/client.js';
export type {
  ClientLogger,
  EventLogOwner,
  EventProcessFn,
  EventProcessor,
  EventTarget,
  ListEventsOptions,
  ListenFrom,
  EventClientOptions,
  NotificationClientOptions,
  RegisterListenerOptions,
  SendOptions,
} from './events/client.js';
export { EventLog } from './events/log.js';
export type { EventTransport, FollowQuery } from './events/transport.js';
export type { AppendedEvent, EventInput, EventQuery, StoredEvent } from './events/types.js';
export type { EventsConfig } from './config/types.js';
export {
  BatonError,
  ERROR_CODES,
  BadRequestError,
  BackendUnavailableError,
  ClaimLostError,
  ConfigError,
  EventsDisabledError,
  FencedError,
  ForbiddenError,
  InternalError,
  InvalidComponentError,
  InvalidEventError,
  InvalidTaskError,
  NodeStoppingError,
  NotFoundError,
  NotInGroupError,
  NotPrimaryError,
  NotRunningError,
  NothingToRunError,
  PayloadTooLargeError,
  PendingMigrationsError,
  RemoteError,
  StatementError,
  SteppedDownError,
  StoreLockedError,
  TooManyRequestsError,
  UnauthorizedError,
  UnknownErrorRecordError,
  UnknownExecutionError,
  UnknownNodeError,
  UnknownQueueError,
  UnknownTaskRunError,
  UnknownWorkflowError,
  WorkAbortedError,
} from './errors.js';
export type { BatonErrorCode } from './errors.js';
