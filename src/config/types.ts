// The configuration a node runs with, after defaults, env overrides and flags are applied and paths are made
// absolute. Code reads only this shape (camelCase, units in the names), never the raw TOML.
import type { LogFormat } from '../log.js';

export type { LogFormat };

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface ResolvedConfig {
  /** Absolute path of the config file, when one was read. */
  file: string | undefined;
  /** Folder that relative paths were resolved against: the config file's folder, or the working directory. */
  baseDir: string;
  node: NodeConfig;
  log: { level: LogLevel; format: LogFormat };
  http: HttpConfig;
  store: StoreConfig;
  redis: RedisConfig;
  queues: Readonly<Record<string, QueueConfig>>;
  /** The node's group; undefined: not in a group. */
  group: GroupConfig | undefined;
  components: Readonly<Record<string, ComponentConfig>>;
  events: EventsConfig;
  tasks: Readonly<Record<string, TaskConfig>>;
  rules: readonly RuleConfig[];
  schedules: Readonly<Record<string, ScheduleConfig>>;
  workflows: Readonly<Record<string, WorkflowConfig>>;
}

export interface NodeConfig {
  /** Name of this node in logs and in its group. */
  name: string;
  /** Absolute folder of the embedded store and the lock file. */
  dataDir: string;
  /** How long SIGTERM waits for in-flight batches before aborting them. */
  shutdownTimeoutMs: number;
  /** How long start waits for a backend before giving up (exit code 4). */
  startupTimeoutMs: number;
}

/**
 * What a token may do: `admin` (sql, initdb, migrate, failover, replay and drop of error queues; it holds the
 * other three too), `read` and `write` (events and tasks of its namespaces, ingest and error queues of its
 * queues, listings), `metrics` (GET /metrics).
 */
export type TokenScope = 'admin' | 'read' | 'write' | 'metrics';

export interface HttpTokenConfig {
  token: string;
  /** What the token may do (never empty). */
  scopes: readonly TokenScope[];
  /** Namespaces the token may use; `undefined` means all. */
  namespaces: readonly string[] | undefined;
  /** Queues the token may use; `undefined` means all. */
  queues: readonly string[] | undefined;
}

export interface HttpConfig {
  enabled: boolean;
  host: string;
  /** 0 means a free port picked at listen time. */
  port: number;
  /** Bearer token with every scope, on every namespace and queue. */
  token: string | undefined;
  tokens: ReadonlyArray<HttpTokenConfig>;
  /**
   * The token CLI commands and nodes present to other nodes: `token`, else the first `[[http.tokens]]`
   * entry with the `admin` scope (such an entry is never limited); undefined when no token is an admin one.
   */
  adminToken: string | undefined;
  /** Request bodies larger than this are answered with 413. */
  bodyLimitBytes: number;
  /**
   * Host header names accepted (any port), lowercased, besides the loopback names and `host`, which always
   * are; 'any': every name (the default when `host` is not loopback).
   */
  hosts: readonly string[] | 'any';
  /** Milliseconds a client has to send a whole request (headers and body); 0 means no limit. */
  requestTimeoutMs: number;
  /** Peers whose X-Forwarded-* headers are believed: all (true), none (false), or these addresses/ranges. */
  trustProxy: boolean | readonly string[];
}

export type StoreConfig = EmbeddedStoreConfig | PostgresStoreConfig;

export interface EmbeddedStoreConfig {
  kind: 'embedded';
  /** Absolute folder of the embedded PGlite database. */
  path: string;
  /** The schema of Baton's own tables. */
  schema: string;
}

export interface PostgresStoreConfig {
  kind: 'postgres';
  /** postgres:// URL of the server. */
  url: string;
  /** The schema of Baton's own tables, in this database and every other one Baton uses. */
  schema: string;
  /** Connections of the pool to the server, at most (the store's one LISTEN connection aside). */
  poolSize: number;
  /**
   * Milliseconds a statement may run before the server ends it; 0: derived from queryTimeoutMs, below it
   * (see serverStatementLimitMs in store/postgres.ts); both 0: no limit.
   */
  statementTimeoutMs: number;
  /**
   * Milliseconds the node waits for the server's answer to one statement before it gives the connection up
   * as silent (client side; at least statement_timeout_ms + 5 s when that is set); 0 means no limit.
   */
  queryTimeoutMs: number;
}

export interface RedisConfig {
  /** redis:// URL used by queues with backend = "redis". */
  url: string;
}

export interface QueueConfig {
  name: string;
  /** Absolute module path, or a bare package name left for the module resolver. */
  handler: string;
  /** Where records wait: a table in the store, a Redis list, or a table in another PostgreSQL database. */
  backend: 'store' | 'redis' | 'postgres';
  /** backend = "postgres": URL of the database that holds the records; undefined for other backends. */
  url: string | undefined;
  /** The Redis list producers push to (backend = "redis"): the queue's name unless `key` is set. */
  key: string;
  /** Absolute folder of the queue's SQL migrations; undefined for a handler loaded from a package. */
  migrations: string | undefined;
  /** Records claimed and committed together. */
  batchSize: number;
  /** Batches in flight at once for this queue on this node. */
  concurrency: number;
  /** Failed runs of a record before it goes to the error queue `errors-<name>`. */
  maxAttempts: number;
  /** Deadline of one handler call. */
  timeoutMs: number;
  /** First back-off after a failure; doubles up to `retryMaxDelayMs`, with jitter. */
  retryDelayMs: number;
  retryMaxDelayMs: number;
  /** Which nodes consume the queue: every node, or only the group's primary. */
  runOn: 'any' | 'primary';
  /** Embedded store only: ingest may run the handler inside the request's transaction. */
  inline: boolean;
  /** "key": each key's records in publish order, one at a time, claims round-robin across keys. */
  ordering: 'none' | 'key';
  /** How long a record's idempotency id is remembered (a second record with it is dropped meanwhile). */
  dedupWindowMs: number;
  /** Records per second the queue may run across the group, at most; undefined: no limit. */
  rateLimit: number | undefined;
  /** Batches that may hold records of one key at once (ordering = "key"); 1 keeps each key's order. */
  keyConcurrency: number;
  /** Records per second one key may run across the group, at most; undefined: no limit. */
  keyRateLimit: number | undefined;
}

export interface ComponentConfig {
  name: string;
  /** Absolute module path, or a package name. */
  module: string;
  /** LISTEN/NOTIFY processors: channels to listen on. */
  channels: readonly string[] | undefined;
}

export interface EventsConfig {
  /** Whether the node serves the event log (HTTP API, stream, listeners). */
  enabled: boolean;
  /** Events older than this are deleted by the primary; 0 keeps them all. */
  retentionMs: number;
  /** Events accepted in one append request, at most. */
  maxBatch: number;
  /** Open event streams one client address may hold at once. */
  maxStreamsPerClient: number;
}

export interface TaskConfig {
  name: string;
  /** Shell command (run by /bin/sh -c in `cwd`); undefined when the task is a module. */
  command: string | undefined;
  /** Absolute module path or package name; undefined when the task is a command. */
  module: string | undefined;
  /** Folder a command runs in: the config file's folder. */
  cwd: string;
  /** Namespace of the task's state events and of its client. */
  namespace: string;
  /** A run past this many milliseconds is stopped and marked failed; 0 means no limit. */
  timeoutMs: number;
  /** A function given in code (defineWorkflow), run in the node's process; else `command` or `module`. */
  run?: ((ctx: never) => unknown) | undefined;
}

export interface RuleConfig {
  /** Position in [[rules]], from 0 (names the rule in logs and task runs). */
  index: number;
  on: { namespace: string; key: string; value: string | undefined };
  action: 'start' | 'stop' | 'restart';
  task: string;
  /** What the new primary does with a run of this rule whose node died. */
  onLost: 'mark' | 'restart';
}

/** An event condition: the namespace, a key (`*` matches any run of characters) and, optionally, a value. */
export interface EventCondition {
  readonly kind: 'event';
  readonly namespace: string;
  readonly key: string;
  readonly value: string | undefined;
}

/** A task-state condition: the latest run of a task of the same execution is in `state`. */
export interface TaskStateCondition {
  readonly kind: 'task';
  readonly task: string;
  readonly state: 'pending' | 'running' | 'succeeded' | 'failed' | 'stopped' | 'lost';
}

export type LeafCondition = EventCondition | TaskStateCondition;

/** What fires a workflow's rule: one condition, or all or any of several. */
export type Condition =
  | LeafCondition
  | { readonly kind: 'all'; readonly parts: readonly LeafCondition[] }
  | { readonly kind: 'any'; readonly parts: readonly LeafCondition[] };

export interface WorkflowRuleConfig {
  /**
   * Names the rule in task runs and logs: its position in the workflow's [[rules]], then one per task with
   * `after`, in task order.
   */
  index: number;
  on: Condition;
  action: 'start' | 'stop' | 'restart';
  task: string;
  /** Where it came from, for messages: "rules[2]" or "tasks.load.after". */
  source: string;
}

export interface WorkflowConfig {
  name: string;
  /**
   * Set when the workflow is defined in a module (`module = "./etl.ts"`): until the node loads it, the
   * workflow has no tasks, rules or triggers here.
   */
  module?: string | undefined;
  /** Namespace of its executions' events (task states, workflow.<name>.<state>) and of its tasks' clients. */
  namespace: string;
  /** Its tasks, keyed by name; each one's namespace is the workflow's. */
  tasks: Readonly<Record<string, TaskConfig>>;
  /** What a new primary does with a lost run of each task: "mark" it (the execution ends lost) or "restart". */
  onLost: Readonly<Record<string, 'mark' | 'restart'>>;
  /** Each task's `after`, as configured (also compiled into `rules`). */
  after: Readonly<Record<string, readonly string[]>>;
  /** The tasks that start when an execution starts: those that no rule starts. */
  initial: readonly string[];
  /** Its [[rules]] and its tasks' `after`, compiled into rules. */
  rules: readonly WorkflowRuleConfig[];
  /** Events that start an execution (a schedule trigger is its schedule.<name>.fired event). */
  triggers: readonly EventCondition[];
  /** Executions running at once, at most; 0: no limit. */
  maxConcurrent: number;
  /** A trigger while `maxConcurrent` run: "queue" the execution until one ends, or "skip" it. */
  overLimit: 'queue' | 'skip';
}

/** When a schedule ticks: a cron expression in a time zone, or a fixed interval aligned to the epoch. */
export type ScheduleTiming =
  | { readonly kind: 'cron'; readonly cron: string; readonly timezone: string }
  | { readonly kind: 'every'; readonly everyMs: number; readonly timezone: string };

/** What a schedule does at each tick. */
export type ScheduleAction =
  | {
      readonly kind: 'publish';
      readonly queue: string;
      readonly payload: string | undefined;
      /** "store": the record commits with the tick; "redis": pushed after it, once, to the list `key`. */
      readonly backend: 'store' | 'redis';
      readonly key: string;
    }
  | {
      readonly kind: 'event';
      readonly namespace: string;
      readonly key: string;
      readonly value: string | undefined;
    }
  | { readonly kind: 'task'; readonly task: string };

export interface ScheduleConfig {
  name: string;
  timing: ScheduleTiming;
  /** What a new primary does with the ticks that fell while no primary was acting. */
  missed: 'skip' | 'last' | 'all';
  /** missed = "all": ticks applied at most on one catch-up; older ones are counted as missed. */
  missedLimit: number;
  /** Random delay added to each firing, at most (the tick keeps its time). */
  jitterMs: number;
  /** Namespace of the schedule.<name>.fired events. */
  namespace: string;
  action: ScheduleAction;
}

export type ElectorKind = 'standalone' | 'postgres' | 'redis' | 'pg-recovery';

/** The resolved [group] settings (docs/config.md). No [group]: the node is not in a group. */
export type GroupConfig = StandaloneGroupConfig | CoordinatedGroupConfig;

/** A group of one: primary at once, with no coordination backend. */
export interface StandaloneGroupConfig extends GroupTimings {
  readonly elector: 'standalone';
  readonly url: undefined;
}

/** A group whose primary is decided through a coordination backend. */
export interface CoordinatedGroupConfig extends GroupTimings {
  readonly elector: Exclude<ElectorKind, 'standalone'>;
  /**
   * The coordination backend: a postgres:// URL (postgres, pg-recovery; default: the store's) or a redis://
   * URL (redis; default: [redis] url).
   */
  readonly url: string;
}

export interface GroupTimings {
  readonly name: string;
  /** How long a lease lasts without renewal. */
  readonly leaseMs: number;
  /** A primary that could not renew for this long stops its primary-only work (< leaseMs). */
  readonly renewDeadlineMs: number;
  /** How often the primary renews, the others look, and every node heartbeats its membership. */
  readonly heartbeatMs: number;
  /** Hard deadline for primary-only work to stop once the node steps down. */
  readonly stopTimeoutMs: number;
  /** pg-recovery: folder to watch, and the files in it whose changes trigger a re-check at once. */
  readonly watchPath: string | undefined;
  readonly failoverFiles: readonly string[];
}
