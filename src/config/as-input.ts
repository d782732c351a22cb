// A resolved config said the way baton.toml says it: snake_case tables and keys, every default and derived
// value written out, paths absolute. `baton print-config` prints it; read back (from the same folder: a task's
// commands run in the config file's folder), it resolves to the same config.
import type { ConfigInput, WorkflowInput } from './schema.js';
import type {
  Condition,
  LeafCondition,
  TaskStateCondition,
  WorkflowConfig,
  GroupConfig,
  HttpConfig,
  QueueConfig,
  ResolvedConfig,
  ScheduleConfig,
  StoreConfig,
} from './types.js';

const DAY_MS = 86_400_000;

type LeafState = TaskStateCondition['state'];

export function configAsInput(config: ResolvedConfig): ConfigInput {
  return defined({
    node: defined({
      name: config.node.name,
      data_dir: config.node.dataDir,
      shutdown_timeout_ms: config.node.shutdownTimeoutMs,
      startup_timeout_ms: config.node.startupTimeoutMs,
    }),
    log: { level: config.log.level, format: config.log.format },
    http: httpInput(config.http),
    store: storeInput(config.store),
    redis: { url: config.redis.url },
    queues: mapValues(config.queues, queueInput),
    group: config.group === undefined ? undefined : groupInput(config.group),
    components: nonEmpty(
      mapValues(config.components, (component) =>
        defined({ module: component.module, channels: copy(component.channels) }),
      ),
    ),
    events: {
      enabled: config.events.enabled,
      retention_days: config.events.retentionMs / DAY_MS,
      max_batch: config.events.maxBatch,
      max_streams_per_client: config.events.maxStreamsPerClient,
    },
    tasks: nonEmpty(
      mapValues(config.tasks, (task) =>
        defined({
          command: task.command,
          module: task.module,
          namespace: task.namespace,
          timeout_ms: task.timeoutMs,
        }),
      ),
    ),
    rules: nonEmpty(
      config.rules.map((rule) => ({
        on: defined({ namespace: rule.on.namespace, key: rule.on.key, value: rule.on.value }),
        action: rule.action,
        task: rule.task,
        on_lost: rule.onLost,
      })),
    ),
    schedules: nonEmpty(mapValues(config.schedules, scheduleInput)),
    workflows: nonEmpty(mapValues(config.workflows, workflowInput)),
  });
}

function workflowInput(workflow: WorkflowConfig): WorkflowInput {
  if (workflow.module !== undefined) return { module: workflow.module };
  return {
    namespace: workflow.namespace,
    max_concurrent: workflow.maxConcurrent,
    over_limit: workflow.overLimit,
    triggers: workflow.triggers.map((on) => ({
      on: defined({ namespace: on.namespace, key: on.key, value: on.value }),
    })),
    tasks: mapValues(workflow.tasks, (task) =>
      defined({
        command: task.command,
        module: task.module,
        run: task.run,
        timeout_ms: task.timeoutMs,
        after: [...(workflow.after[task.name] ?? [])],
        on_lost: workflow.onLost[task.name],
      }),
    ),
    rules: workflow.rules
      .filter((rule) => rule.source.startsWith('rules['))
      .map((rule) => ({ on: conditionInput(rule.on), action: rule.action, task: rule.task })),
  };
}

/** A condition as a config (or the wire) says it. */
export function conditionInput(on: Condition): NonNullable<WorkflowInput['rules']>[number]['on'] {
  if (on.kind === 'all') return { all: on.parts.map(leafInput) };
  if (on.kind === 'any') return { any: on.parts.map(leafInput) };
  return leafInput(on);
}

function leafInput(on: LeafCondition): {
  key?: string | undefined;
  value?: string | undefined;
  task?: string | undefined;
  state?: LeafState | undefined;
} {
  return on.kind === 'task' ? { task: on.task, state: on.state } : defined({ key: on.key, value: on.value });
}

function scheduleInput(schedule: ScheduleConfig): NonNullable<ConfigInput['schedules']>[string] {
  const { timing, action } = schedule;
  return defined({
    cron: timing.kind === 'cron' ? timing.cron : undefined,
    every: timing.kind === 'every' ? `${timing.everyMs}ms` : undefined,
    timezone: timing.timezone,
    missed: schedule.missed,
    missed_limit: schedule.missedLimit,
    jitter_ms: schedule.jitterMs,
    namespace: schedule.namespace,
    publish:
      action.kind === 'publish' ? defined({ queue: action.queue, payload: action.payload }) : undefined,
    event:
      action.kind === 'event'
        ? defined({ namespace: action.namespace, key: action.key, value: action.value })
        : undefined,
    task: action.kind === 'task' ? action.task : undefined,
  });
}

function httpInput(http: HttpConfig): NonNullable<ConfigInput['http']> {
  return defined({
    enabled: http.enabled,
    host: http.host,
    port: http.port,
    token: http.token,
    body_limit_bytes: http.bodyLimitBytes,
    hosts: http.hosts === 'any' ? ['*'] : [...http.hosts],
    request_timeout_ms: http.requestTimeoutMs,
    trust_proxy: typeof http.trustProxy === 'boolean' ? http.trustProxy : [...http.trustProxy],
    tokens: http.tokens.map((entry) =>
      defined({
        token: entry.token,
        scopes: [...entry.scopes],
        namespaces: copy(entry.namespaces),
        queues: copy(entry.queues),
      }),
    ),
  });
}

function storeInput(store: StoreConfig): NonNullable<ConfigInput['store']> {
  if (store.kind === 'embedded') return { path: store.path, schema: store.schema };
  return {
    url: store.url,
    schema: store.schema,
    pool_size: store.poolSize,
    statement_timeout_ms: store.statementTimeoutMs,
    query_timeout_ms: store.queryTimeoutMs,
  };
}

function queueInput(queue: QueueConfig): NonNullable<ConfigInput['queues']>[string] {
  return defined({
    handler: queue.handler,
    backend: queue.backend,
    url: queue.url,
    key: queue.key,
    migrations: queue.migrations,
    batch_size: queue.batchSize,
    concurrency: queue.concurrency,
    max_attempts: queue.maxAttempts,
    timeout_ms: queue.timeoutMs,
    retry_delay_ms: queue.retryDelayMs,
    retry_max_delay_ms: queue.retryMaxDelayMs,
    inline: queue.inline,
    run_on: queue.runOn,
    ordering: queue.ordering,
    dedup_window_ms: queue.dedupWindowMs,
    rate_limit: queue.rateLimit,
    key_concurrency: queue.ordering === 'key' ? queue.keyConcurrency : undefined,
    key_rate_limit: queue.keyRateLimit,
  });
}

function groupInput(group: GroupConfig): NonNullable<ConfigInput['group']> {
  return defined({
    name: group.name,
    elector: group.elector,
    url: group.url,
    lease_ms: group.leaseMs,
    renew_deadline_ms: group.renewDeadlineMs,
    heartbeat_ms: group.heartbeatMs,
    stop_timeout_ms: group.stopTimeoutMs,
    watch_path: group.watchPath,
    failover_files: [...group.failoverFiles],
  });
}

function mapValues<T, U>(table: Readonly<Record<string, T>>, map: (value: T) => U): Record<string, U> {
  return Object.fromEntries(Object.entries(table).map(([key, value]) => [key, map(value)]));
}

/** Undefined for an empty table or list of tables, which says no more than its absence. */
function nonEmpty<T extends object>(value: T): T | undefined {
  return Object.keys(value).length === 0 ? undefined : value;
}

function copy(list: readonly string[] | undefined): string[] | undefined {
  return list === undefined ? undefined : [...list];
}

/** `table` without its undefined values: TOML has no null, and an absent key means the default. */
function defined<T extends object>(table: T): T {
  return Object.fromEntries(Object.entries(table).filter(([, value]) => value !== undefined)) as T;
}
