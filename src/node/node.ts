// A node: one running Baton process, and the composition root. It loads the handlers, opens the store,
// joins its group, hands every long-running part (queue runners, components, the rule engine, retention)
// to the supervisor, which starts and stops them as the role changes, and serves the HTTP API; it stops
// them in reverse order. Its lifecycle is a state machine (idle → starting → running → stopping → stopped |
// failed) changed through one logging setter.
import { randomUUID } from 'node:crypto';

import type { QueueConfig, ResolvedConfig } from '../config/types.js';
import { describeError, NothingToRunError, UnknownQueueError } from '../errors.js';
import type { Handler } from '../handler/handler.js';
import { loadHandler } from '../handler/load.js';
import { createMissingTables } from '../handler/tables.js';
import type { HttpServer, RouteRegistrar } from '../http/server.js';
import { startHttpServer } from '../http/server.js';
import type { Logger } from '../log.js';
import type { ErrorRecord } from '../queue/backend.js';
import type { IngestResult } from '../queue/ingest.js';
import { ingestInline } from '../queue/ingest.js';
import { RecordProcessor } from '../queue/processor.js';
import { QueueRunner } from '../queue/runner.js';
import type { QueryResult } from '../store/store.js';
import type { Admin, QueueInfo } from './admin.js';
import type { NewMigration, SchemaUpdate } from './schema.js';
import { makeMigration, updateSchema } from './schema.js';
import type { Storage } from './storage.js';
import { openStorage } from './storage.js';
import type { GroupStatus } from '../cluster/types.js';
import { Group } from '../cluster/group.js';
import { assertFence } from '../cluster/fence.js';
import type { Component } from '../components/component.js';
import { loadConfiguredComponent } from '../components/configured.js';
import type { ComponentStatus } from '../components/supervisor.js';
import { Supervisor } from '../components/supervisor.js';
import type { LeaderWatchCallback, RoleChangeCallback } from '../cluster/role-events.js';
import type { LeaderWatchEventType, Role, RoleChange } from '../cluster/types.js';
import type { MigrationProgress } from '../store/migrate.js';
import type { Tx } from '../store/store.js';
import { EventLog } from '../events/log.js';
import type { RetentionTarget } from '../events/retention.js';
import { Retention } from '../events/retention.js';
import { RuleEngine } from '../tasks/engine.js';
import type { StopRequest, TaskRun, TaskRunQuery } from '../tasks/runs.js';
import { listTaskRuns, pruneTaskRuns, requestStop } from '../tasks/runs.js';
import { taskRunJson } from '../tasks/wire.js';
import { NodeMetrics } from '../metrics/metrics.js';

export type NodeState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

export class BatonNode implements Admin {
  readonly config: ResolvedConfig;
  readonly log: Logger;
  readonly consumer: string;
  #state: NodeState = 'idle';
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #storage: Storage | undefined;
  #http: HttpServer | undefined;
  #handlers: Handler[] = [];
  readonly #processors = new Map<string, RecordProcessor>();
  /** Components of the supervisor: their runs are what a queue's handlers abort with. */
  readonly #runners = new Map<string, QueueRunner>();
  #group: Group | undefined;
  #supervisor: Supervisor | undefined;
  #components: Component[] = [];
  #unsubscribeRole: (() => void) | undefined;
  #events: EventLog | undefined;
  #ruleEngine: RuleEngine | undefined;
  /** Prometheus metrics, read from this node at scrape time. */
  readonly metrics: NodeMetrics;

  readonly #routes: RouteRegistrar | undefined;

  readonly #extraComponents: readonly Component[];

  constructor(
    config: ResolvedConfig,
    log: Logger,
    routes?: RouteRegistrar,
    components: readonly Component[] = [],
  ) {
    this.config = config;
    this.log = log;
    this.#routes = routes;
    this.#extraComponents = components;
    this.consumer = `${config.node.name}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.metrics = new NodeMetrics(this);
  }

  get name(): string {
    return this.config.node.name;
  }

  get state(): NodeState {
    return this.#state;
  }

  /** Base URL of the HTTP API, once it listens. */
  get address(): string | undefined {
    return this.#http?.address;
  }

  /** This node's role: 'primary' | 'secondary' | 'not-in-group' (a node with no group acts alone). */
  get role(): Role {
    return this.#group?.state.role ?? (this.config.group ? 'secondary' : 'not-in-group');
  }

  /** The group's term as this node knows it (0 when not in a group). */
  get term(): number {
    return this.#group?.state.term ?? 0;
  }

  /** Name of the group's primary, when known. */
  get leader(): string | undefined {
    return this.#group?.state.leader;
  }

  /**
   * Calls `callback` at once with the current role (previous = null), then on every role change, in order,
   * never blocking the elector. Returns the function that unsubscribes.
   */
  subscribe(event: 'node-role-changed', callback: RoleChangeCallback): () => void {
    if (event !== 'node-role-changed')
      throw new TypeError(`unknown event "${String(event)}": use 'node-role-changed'`);
    return this.#roles().subscribe(callback);
  }

  /** Registers a leader watch under `key` (the same key replaces it); no event type: both. */
  addLeaderWatch(key: string, fn: LeaderWatchCallback, eventType?: LeaderWatchEventType): void {
    this.#roles().addLeaderWatch(key, fn, eventType);
  }

  removeLeaderWatch(key: string): boolean {
    return this.#roles().removeLeaderWatch(key);
  }

  /** Role changes as an async iterable: the current role first, then every change. */
  roleChanges(): AsyncIterableIterator<RoleChange> {
    return this.#roles().roleChanges();
  }

  /**
   * Inside `tx`: throws FencedError when this node is no longer the group's primary (its term is over), so
   * a deposed primary's write rolls back. A no-op for a node not in a group.
   */
  assertPrimary(tx: Tx): Promise<void> {
    return this.#group?.assertPrimary(tx) ?? Promise.resolve();
  }

  /** Runs `fn` in a transaction of the store (commit on return, rollback on throw), e.g. with assertPrimary. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.#open().store.transaction(fn);
  }

  /** The group as this node sees it: role, term, primary, members, recent failovers. */
  async cluster(): Promise<GroupStatus> {
    if (!this.#group) throw new Error(`node ${this.name} is ${this.#state}`);
    return this.#group.status();
  }

  /** The components and their state (running, backing off after a failure, …). */
  components(): ComponentStatus[] {
    return this.#supervisor?.status() ?? [];
  }

  /** Changes of primary this node has seen since it started. */
  get failoverCount(): number {
    return this.#group?.failoverCount ?? 0;
  }

  /** Manual failover: when this node is primary it yields (to `to` when named). */
  async failover(to?: string): Promise<void> {
    await this.#group?.failover(to);
  }

  /** The event log, when `[events] enabled` (the default) and the node runs. */
  get events(): EventLog | undefined {
    return this.#events;
  }

  /** Configured queue names, in config order. */
  get queueNames(): string[] {
    return Object.keys(this.config.queues);
  }

  start(): Promise<void> {
    this.#starting ??= this.#start();
    return this.#starting;
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  close(): Promise<void> {
    return this.stop();
  }

  /** Accepts records into a queue: processed inline on the embedded store when it can, else queued. */
  async ingest(queue: string, records: readonly Buffer[]): Promise<IngestResult> {
    const processor = this.#processor(queue);
    const storage = this.#open();
    if (records.length === 0) return { accepted: 0, processed: 0 };
    const backend = storage.backendFor(queue);
    if (
      backend === storage.storeQueues &&
      processor.queue.inline &&
      storage.store.exclusive &&
      this.#state === 'running'
    ) {
      const started = performance.now();
      const result = await ingestInline(storage.store, storage.storeQueues, processor, records);
      if (result.processed > 0) {
        this.metrics.observeBatch(queue, (performance.now() - started) / 1000, 'committed');
      }
      return result;
    }
    await backend.publish(queue, records);
    return { accepted: records.length, processed: 0 };
  }

  async publish(queue: string, records: readonly Buffer[]): Promise<number> {
    return (await this.ingest(queue, records)).accepted;
  }

  async queues(): Promise<QueueInfo[]> {
    const storage = this.#open();
    return Promise.all(
      this.queueNames.map(async (name) => {
        const backend = storage.backendFor(name);
        const stats = await backend.stats(name);
        const counters = this.#processor(name).counters;
        return {
          name,
          backend: backend.kind,
          ...stats,
          processed: counters.processed,
          failed: counters.failed,
        };
      }),
    );
  }

  listErrors(queue: string, options: { limit: number; afterId?: string }): Promise<ErrorRecord[]> {
    this.#processor(queue);
    return this.#open().backendFor(queue).listErrors(queue, options);
  }

  replayErrors(queue: string, options: { ids?: readonly string[]; limit: number }): Promise<number> {
    this.#processor(queue);
    return this.#open().backendFor(queue).replayErrors(queue, options);
  }

  dropErrors(queue: string, ids: readonly string[]): Promise<number> {
    this.#processor(queue);
    return this.#open().backendFor(queue).dropErrors(queue, ids);
  }

  sql(text: string, params: readonly unknown[] = []): Promise<QueryResult> {
    return this.#open().store.query(text, params);
  }

  initdb(): Promise<string[]> {
    return createMissingTables(this.#open().store, this.#handlers);
  }

  migrate(onApplied?: MigrationProgress): Promise<SchemaUpdate> {
    return updateSchema(this.#open().store, this.config, this.#handlers, onApplied);
  }

  makeMigration(queue: string, message: string): Promise<NewMigration> {
    this.#processor(queue);
    const handler = this.#handlers.find((candidate) => candidate.queue === queue) as Handler;
    return makeMigration(this.#open().store, this.config, handler, message);
  }

  /** Resolves true when the node runs and its store answers. */
  async ready(): Promise<boolean> {
    return this.#state === 'running' && (await this.#storage?.ready()) === true;
  }

  async #start(): Promise<void> {
    this.#setState('starting');
    try {
      const queues = Object.values(this.config.queues);
      if (
        queues.length === 0 &&
        Object.keys(this.config.components).length === 0 &&
        this.#extraComponents.length === 0 &&
        Object.keys(this.config.tasks).length === 0 &&
        !this.config.events.enabled
      ) {
        throw new NothingToRunError(
          'nothing to run: add a [queues.<name>] table with a handler, a [components.<name>] table or a ' +
            '[tasks.<name>] table, or set [events] enabled = true',
        );
      }
      // Handlers first: a broken handler is a config error, found before anything is opened.
      this.#handlers = await Promise.all(
        queues.map((queue) => loadHandler(queue.name, queue.handler, this.config.file)),
      );
      this.#components = [
        ...this.#extraComponents,
        ...(await Promise.all(
          Object.values(this.config.components).map((component) =>
            loadConfiguredComponent(component, this.config.file),
          ),
        )),
      ];
      this.#storage = await openStorage(this.config, this.log);
      const storage = this.#storage;
      const { store } = storage;
      const { migrated, created } = await updateSchema(store, this.config, this.#handlers);
      for (const id of [...this.#storage.migrated, ...migrated])
        this.log.info({ migration: id }, `applied migration ${id}`);
      if (created.length > 0) this.log.info({ tables: created }, `created tables ${created.join(', ')}`);
      for (const backend of storage.backends) await backend.registerConsumer(this.consumer, this.name);
      if (this.config.events.enabled) {
        this.#events = new EventLog(store, this.log);
        await this.#events.start();
      }
      const group = new Group({
        config: this.config.group,
        node: this.name,
        store,
        log: this.log,
        storeUrl: this.config.store.kind === 'postgres' ? this.config.store.url : undefined,
        address: () => this.address,
        startupTimeoutMs: this.config.node.startupTimeoutMs,
      });
      this.#group = group;
      const groupName = this.config.group?.name;
      const supervisor = new Supervisor({
        log: this.log.child({ part: 'supervisor' }),
        store,
        assertPrimary: groupName ? (tx, term) => assertFence(tx, groupName, term) : () => Promise.resolve(),
        // Primary-only work must be over before another node may take over.
        stopTimeoutMs: this.config.group?.stopTimeoutMs ?? this.config.node.shutdownTimeoutMs,
        // At the node's stop, in-flight batches get this long to finish before they are aborted.
        drainTimeoutMs: this.config.node.shutdownTimeoutMs,
      });
      for (const component of this.#components) supervisor.add(component);
      this.#ruleEngine = await this.#addRuleEngine(supervisor, store);
      this.#supervisor = supervisor;

      for (const [index, queue] of queues.entries()) {
        const processor = this.#makeProcessor(queue, this.#handlers[index] as Handler);
        this.#processors.set(queue.name, processor);
        const runner = new QueueRunner({
          processor,
          backend: storage.backendFor(queue.name),
          store,
          consumer: this.consumer,
          log: this.log,
          onBatch: (seconds, outcome) => this.metrics.observeBatch(queue.name, seconds, outcome),
        });
        this.#runners.set(queue.name, runner);
        supervisor.add(runner);
      }
      this.#addRetention(supervisor);
      if (this.config.http.enabled) {
        this.#http = await startHttpServer(this, this.config.http, this.log, this.#routes);
        await this.#storage.lock?.setAddress(this.#http.address);
      }
      await group.start();
      await supervisor.start();
      this.#setState('running');
      // The supervisor is the one role gate. The first call (at once) starts what this role runs; later
      // calls follow the role: a step-down aborts primary-only work at once. Not awaited, so that a slow
      // stop never delays the next change.
      this.#unsubscribeRole = group.roles.subscribe((change) => {
        void supervisor.setRole(change.new, change.term);
      });
      this.log.info(
        { queues: this.queueNames, http: this.address, store: this.config.store.kind },
        `node ${this.name} running: queues ${this.queueNames.join(', ')}${this.address ? `, HTTP on ${this.address}` : ''}`,
      );
    } catch (error) {
      this.#setState('failed');
      await this.#release();
      throw error;
    }
  }

  async #stop(): Promise<void> {
    await this.#starting?.catch(() => undefined);
    if (this.#state !== 'running') return;
    this.#setState('stopping');
    // Queue runners stop claiming and finish their in-flight batches within shutdown_timeout_ms; past it they
    // are aborted (NodeStoppingError) and their batches given back. Leadership is released once the
    // primary-only work stopped, so that another node takes over safely while the rest still drains, and
    // the HTTP API stops accepting requests then (#release waits for it, and logs a failure).
    await this.#supervisor?.stop({
      afterPrimaryWork: async () => {
        await this.#group?.stop();
        this.#http?.close().catch(() => undefined);
      },
    });
    // Only now: a step-down during the drain still aborts primary-only work at once.
    this.#unsubscribeRole?.();
    await this.#release();
    this.#setState('stopped');
  }

  /** The runs of tasks, newest first. */
  taskRuns(query: TaskRunQuery = {}): Promise<TaskRun[]> {
    return listTaskRuns(this.#open().store, query);
  }

  /** The latest task runs as JSON rows, newest first; null when no task is configured (the dashboard). */
  async recentTaskRuns(limit: number): Promise<Array<Record<string, unknown>> | null> {
    if (!this.#ruleEngine) return null;
    return (await this.taskRuns({ limit })).map(taskRunJson);
  }

  /** Records a stop request for a task run; the primary's rule engine carries it out. */
  async stopTaskRun(id: string): Promise<StopRequest> {
    const request = await requestStop(this.#open().store, id);
    if (request.requested) this.#ruleEngine?.wake();
    return request;
  }

  /** With tasks configured: the rule engine, a primary-only component (needs the event log). */
  async #addRuleEngine(supervisor: Supervisor, store: Storage['store']): Promise<RuleEngine | undefined> {
    if (Object.keys(this.config.tasks).length === 0) return undefined;
    // The loader refuses tasks without the event log; a resolved config built by hand may still have them.
    if (!this.#events) throw new Error('tasks and rules need the event log: set [events] enabled = true');
    const groupName = this.config.group?.name;
    const stopTimeoutMs = this.config.group?.stopTimeoutMs ?? this.config.node.shutdownTimeoutMs;
    const engine = new RuleEngine({
      node: this.name,
      tasks: this.config.tasks,
      rules: this.config.rules,
      events: this.#events,
      store,
      log: this.log,
      url: () => this.address,
      fence: groupName ? (tx, term) => assertFence(tx, groupName, term) : () => Promise.resolve(),
      // A stopped run gets half the stop deadline between SIGTERM and SIGKILL, at most 5 s.
      graceMs: Math.max(50, Math.min(5_000, Math.floor(stopTimeoutMs / 2))),
    });
    await engine.prepare();
    supervisor.add(engine);
    return engine;
  }

  /** With `[events] retention_days`: retention, a primary-only component whose deletes are fenced. */
  #addRetention(supervisor: Supervisor): void {
    const { retentionMs } = this.config.events;
    const events = this.#events;
    if (!events || retentionMs === 0) return;
    const targets: RetentionTarget[] = [{ what: 'events', prune: (tx, ms) => events.pruneIn(tx, ms) }];
    // Task runs that ended follow the same retention as the events that tell their story.
    if (this.#ruleEngine) targets.push({ what: 'task runs', prune: pruneTaskRuns });
    supervisor.add(new Retention({ retentionMs, targets }));
  }

  async #release(): Promise<void> {
    try {
      await this.#http?.close();
      await this.#events?.close();
      await this.#group?.stop();
      await this.#storage?.close();
    } catch (error) {
      this.log.error({ err: describeError(error) }, 'error while releasing resources');
    }
  }

  #makeProcessor(queue: QueueConfig, handler: Handler): RecordProcessor {
    const idle = new AbortController().signal;
    return new RecordProcessor({
      queue,
      handler,
      log: this.log,
      // The signal of the queue runner's run: it aborts on a step-down (run_on = "primary") and when the
      // node's stop is past shutdown_timeout_ms (every queue).
      abort: () => this.#runners.get(queue.name)?.signal ?? idle,
      fencing: { term: () => this.term, assertPrimary: (tx) => this.assertPrimary(tx) },
    });
  }

  #roles(): Group['roles'] {
    if (!this.#group) throw new Error(`node ${this.name} is ${this.#state}: roles are known once it runs`);
    return this.#group.roles;
  }

  #processor(queue: string): RecordProcessor {
    const processor = this.#processors.get(queue);
    if (!processor) throw new UnknownQueueError(queue, this.queueNames);
    return processor;
  }

  #open(): Storage {
    if (!this.#storage || this.#state === 'stopped' || this.#state === 'failed') {
      throw new Error(`node ${this.name} is ${this.#state}`);
    }
    return this.#storage;
  }

  #setState(state: NodeState): void {
    this.log.debug({ from: this.#state, to: state }, `node ${state}`);
    this.#state = state;
  }
}
