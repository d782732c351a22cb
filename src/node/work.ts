// What a node hands to its supervisor, built from the config: a queue runner per queue (with its record
// processor), the rule engine when tasks are configured, and retention when the event log keeps history for
// a limited time. The supervisor starts and stops each as the role asks; the node only composes them.
import { assertFence } from '../cluster/fence.js';
import type { Component } from '../components/component.js';
import { loadConfiguredComponent } from '../components/configured.js';
import { Supervisor } from '../components/supervisor.js';
import type { ResolvedConfig } from '../config/types.js';
import { ConfigError, NothingToRunError } from '../errors.js';
import type { EventLog } from '../events/log.js';
import type { RetentionTarget } from '../events/retention.js';
import { Retention } from '../events/retention.js';
import type { Handler } from '../handler/handler.js';
import { loadQueueHandlers } from '../handler/load.js';
import { updateSchema } from '../handler/schema.js';
import type { Logger } from '../log.js';
import { queueSettings } from '../queue/backend.js';
import type { Backends } from '../queue/backends.js';
import type { CountersByQueue, Fencing } from '../queue/processor.js';
import { RecordProcessor } from '../queue/processor.js';
import type { BatchOutcome } from '../queue/runner.js';
import { QueueRunner } from '../queue/runner.js';
import type { HandlerWatch } from '../queue/watchdog.js';
import { StoreQueueBackend } from '../queue/store-queue.js';
import type { TickCause } from '../schedules/ticks.js';
import { Scheduler } from '../schedules/scheduler.js';
import type { Store, Tx } from '../store/store.js';
import { RuleEngine } from '../tasks/engine.js';
import { loadWorkflowModules } from '../config/workflow-modules.js';
import { pruneExecutions } from '../tasks/executions.js';
import { pruneTaskRuns } from '../tasks/runs.js';

/**
 * The handlers of the queues and the components (configured ones after those given in code), loaded and
 * checked; NothingToRunError for a config that gives a node nothing to do (exit code 3).
 */
export async function loadPlugins(
  config: ResolvedConfig,
  inCode: readonly Component[],
): Promise<{ handlers: Handler[]; components: Component[] }> {
  assertSomethingToRun(config, inCode.length);
  // Workflows defined in modules: loaded and checked now, like handlers (the config's entries are replaced).
  config.workflows = await loadWorkflowModules(config);
  const handlers = await loadQueueHandlers(config);
  const configured = Object.values(config.components).map((c) => loadConfiguredComponent(c, config.file));
  return { handlers, components: [...inCode, ...(await Promise.all(configured))] };
}

/**
 * Brings the store's schema up to date (logging what was applied, `migrated` too: Baton's migrations that
 * opening the backends deferred) and registers the node's consumer. `schemaCurrent`: the caller found it
 * current (schemaIsCurrent), so only the consumer is registered.
 */
export async function prepareBackends(
  backends: Backends,
  config: ResolvedConfig,
  handlers: readonly Handler[],
  node: { consumer: string; log: Logger; migrated?: readonly string[]; schemaCurrent?: boolean },
): Promise<void> {
  const { migrated, created, warnings } = node.schemaCurrent
    ? { migrated: [], created: [], warnings: [] }
    : await updateSchema(backends.store, config, handlers);
  for (const id of [...backends.migrated, ...(node.migrated ?? []), ...migrated]) {
    node.log.info({ migration: id }, `applied migration ${id}`);
  }
  if (created.length > 0) node.log.info({ tables: created }, `created tables ${created.join(', ')}`);
  for (const warning of warnings) node.log.warn(warning);
  for (const backend of backends.backends) await backend.registerConsumer(node.consumer, config.node.name);
}

/** Refuses a config that gives a node nothing to do (exit code 3). */
function assertSomethingToRun(config: ResolvedConfig, componentsInCode: number): void {
  const none = (table: object): boolean => Object.keys(table).length === 0;
  if (
    none(config.queues) &&
    none(config.components) &&
    componentsInCode === 0 &&
    none(config.tasks) &&
    none(config.schedules) &&
    none(config.workflows)
  ) {
    if (config.events.enabled) return;
    throw new NothingToRunError(
      'nothing to run: add a [queues.<name>] table with a handler, a [components.<name>] table or a ' +
        '[tasks.<name>] table, or set [events] enabled = true',
    );
  }
}

/** The fence check of the config's group, for a term; a no-op for a node not in a group. */
function fenceOf(config: ResolvedConfig): (tx: Tx, term: number) => Promise<void> {
  const group = config.group?.name;
  return group ? (tx, term) => assertFence(tx, group, term) : () => Promise.resolve();
}

/** How long primary-only work may take to stop once another node may take over. */
function stopTimeoutOf(config: ResolvedConfig): number {
  return config.group?.stopTimeoutMs ?? config.node.shutdownTimeoutMs;
}

/** The supervisor of a node: the one role gate, with the node's fence and deadlines. */
export function makeSupervisor(config: ResolvedConfig, store: Store, log: Logger): Supervisor {
  return new Supervisor({
    log: log.child({ part: 'supervisor' }),
    store,
    assertPrimary: fenceOf(config),
    // Primary-only work must be over before another node may take over.
    stopTimeoutMs: stopTimeoutOf(config),
    // At the node's stop, in-flight batches get this long to finish before they are aborted.
    drainTimeoutMs: config.node.shutdownTimeoutMs,
  });
}

/** A queue runner per queue, added to the supervisor; returns the processors by queue. */
export function addQueueRunners(options: {
  config: ResolvedConfig;
  handlers: readonly Handler[];
  backends: Backends;
  supervisor: Supervisor;
  consumer: string;
  log: Logger;
  fencing: Fencing;
  /** Told of each handler call: the watchdog. */
  watch?: HandlerWatch;
  onBatch: (queue: string, seconds: number, outcome: BatchOutcome) => void;
}): Map<string, RecordProcessor> {
  const processors = new Map<string, RecordProcessor>();
  const runners = new Map<string, QueueRunner>();
  const idle = new AbortController().signal;
  for (const [index, queue] of Object.values(options.config.queues).entries()) {
    const processor = new RecordProcessor({
      queue,
      handler: options.handlers[index] as Handler,
      log: options.log,
      // The signal of the runner's run: it aborts on a step-down (run_on = "primary") and when the node's
      // stop is past shutdown_timeout_ms (every queue).
      abort: () => runners.get(queue.name)?.signal ?? idle,
      fencing: options.fencing,
      ...(options.watch ? { watch: options.watch } : {}),
    });
    const backend = options.backends.backendFor(queue.name);
    // The handler's key() keys records that arrive without a key (pushed raw to a Redis list).
    const keyOf = (options.handlers[index] as Handler).key;
    backend.configure(queue.name, queueSettings(queue, keyOf));
    const runner = new QueueRunner({
      processor,
      backend,
      store: options.backends.store,
      consumer: options.consumer,
      log: options.log,
      onBatch: (seconds, outcome) => options.onBatch(queue.name, seconds, outcome),
    });
    processors.set(queue.name, processor);
    runners.set(queue.name, runner);
    options.supervisor.add(runner);
  }
  return processors;
}

/** Processed and failed records per queue on this node since it started. */
export function countersOf(processors: ReadonlyMap<string, RecordProcessor>): CountersByQueue {
  return new Map([...processors].map(([queue, processor]) => [queue, { ...processor.counters }]));
}

/**
 * With tasks configured: the rule engine, a primary-only component (it needs the event log). Its prepare()
 * writes to the store: the node calls it with the other writes of its start-up.
 */
export function addRuleEngine(options: {
  config: ResolvedConfig;
  events: EventLog | undefined;
  backends: Backends;
  supervisor: Supervisor;
  log: Logger;
  url: () => string | undefined;
  onExecutionEnded?: (workflow: string, state: string) => void;
}): RuleEngine | undefined {
  const { config } = options;
  if (Object.keys(config.tasks).length === 0 && Object.keys(config.workflows).length === 0) return undefined;
  // The loader refuses tasks without the event log; a resolved config built by hand may still have them.
  if (!options.events) {
    throw new ConfigError('tasks, rules and workflows need the event log: set [events] enabled = true', {
      key: 'events.enabled',
    });
  }
  const engine = new RuleEngine({
    node: config.node.name,
    tasks: config.tasks,
    rules: config.rules,
    workflows: config.workflows,
    onExecutionEnded: options.onExecutionEnded,
    events: options.events,
    store: options.backends.store,
    log: options.log,
    url: options.url,
    fence: fenceOf(config),
    // A stopped run gets half the stop deadline between SIGTERM and SIGKILL, at most 5 s.
    graceMs: Math.max(50, Math.min(5_000, Math.floor(stopTimeoutOf(config) / 2))),
  });
  options.supervisor.add(engine);
  return engine;
}

/**
 * With schedules configured: the scheduler, a primary-only component (each tick is an event, so it needs the
 * event log; the loader refuses schedules without it).
 */
export async function addScheduler(options: {
  config: ResolvedConfig;
  events: EventLog | undefined;
  backends: Backends;
  supervisor: Supervisor;
  log: Logger;
  wakeTasks: () => void;
  onTick?: (schedule: string, latenessMs: number, cause: TickCause) => void;
  onMissed?: (schedule: string, count: number) => void;
  /** Told of what the scheduler opened (a Redis connection), to close once the supervisor has stopped. */
  opened: (what: string, release: () => Promise<void>) => void;
}): Promise<Scheduler | undefined> {
  const { config, backends } = options;
  if (Object.keys(config.schedules).length === 0) return undefined;
  const toRedis = Object.values(config.schedules).some(
    ({ action }) => action.kind === 'publish' && action.backend === 'redis',
  );
  // The Redis driver is loaded only when a schedule publishes to a Redis queue.
  const redis = toRedis
    ? new (await import('../schedules/redis-push.js')).RedisTickPush(config.redis.url)
    : undefined;
  if (redis) options.opened('schedules: Redis connection', () => redis.close());
  if (!options.events) {
    throw new ConfigError('schedules need the event log: set [events] enabled = true', {
      key: 'events.enabled',
    });
  }
  const scheduler = new Scheduler({
    schedules: config.schedules,
    tasks: config.tasks,
    node: config.node.name,
    events: options.events,
    store: backends.store,
    log: options.log,
    wakeQueue: (queue) => {
      const backend = backends.backendFor(queue);
      if (backend instanceof StoreQueueBackend) backend.notify(queue);
    },
    wakeTasks: options.wakeTasks,
    ...(redis ? { redis } : {}),
    ...(options.onTick ? { onTick: options.onTick } : {}),
    ...(options.onMissed ? { onMissed: options.onMissed } : {}),
  });
  options.supervisor.add(scheduler);
  return scheduler;
}

/** With `[events] retention_days`: retention, a primary-only component whose deletes are fenced. */
export function addRetention(
  config: ResolvedConfig,
  events: EventLog | undefined,
  withTaskRuns: boolean,
  supervisor: Supervisor,
): void {
  const { retentionMs } = config.events;
  if (!events || retentionMs === 0) return;
  const targets: RetentionTarget[] = [
    { what: 'events', prune: (tx, ms, limit) => events.pruneIn(tx, ms, limit) },
  ];
  // Task runs that ended follow the same retention as the events that tell their story.
  if (withTaskRuns) {
    targets.push({ what: 'task runs', prune: pruneTaskRuns });
    targets.push({ what: 'workflow executions', prune: pruneExecutions });
  }
  supervisor.add(new Retention({ retentionMs, targets }));
}
