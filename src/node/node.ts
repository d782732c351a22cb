// A node: one running Baton process, and the composition root. It loads the handlers, opens its backends,
// joins its group, hands every long-running part (queue runners, components, the rule engine, retention)
// to the supervisor, which starts and stops them as the role changes, and serves the HTTP API. What it
// opens goes on one release stack, closed in reverse order. Its lifecycle is a state machine (idle →
// starting → running → stopping → stopped | failed) changed through one logging setter.
import { randomUUID } from 'node:crypto';

import type { Admin } from '../admin/admin.js';
import { nodeGroupAccess } from '../admin/group-access.js';
import { StoreAdmin } from '../admin/store-admin.js';
import { Group } from '../cluster/group.js';
import type { LeaderWatchCallback, RoleChangeCallback } from '../cluster/role-events.js';
import type { LeaderWatchEventType, Role, RoleChange } from '../cluster/types.js';
import type { Component } from '../components/component.js';
import type { ComponentStatus } from '../components/supervisor.js';
import type { Supervisor } from '../components/supervisor.js';
import type { ResolvedConfig, ScheduleConfig, WorkflowConfig } from '../config/types.js';
import {
  BackendUnavailableError,
  describeError,
  NotFoundError,
  NotRunningError,
  UnknownQueueError,
} from '../errors.js';
import { EventLog } from '../events/log.js';
import type { HttpNode, Readiness } from '../http/node.js';
import type { RouteRegistrar } from '../http/server.js';
import { startHttpServer } from '../http/server.js';
import type { Logger } from '../log.js';
import { NodeMetrics } from '../metrics/metrics.js';
import type { Backends } from '../queue/backends.js';
import { openBackends } from '../queue/backends.js';
import type { PublishOptions } from '../queue/delay.js';
import type { RecordOptions } from '../queue/record-options.js';
import { toRecordOptions } from '../queue/record-options.js';
import type { IngestResult } from '../queue/ingest.js';
import { ingestRecords } from '../queue/ingest.js';
import type { CountersByQueue, RecordProcessor } from '../queue/processor.js';
import type { HandlerCall } from '../queue/watchdog.js';
import { Watchdog } from '../queue/watchdog.js';
import type { Handler } from '../handler/handler.js';
import { schemaIsCurrent } from '../handler/schema.js';
import { builtinMigrations, missingSchema } from '../store/migrate.js';
import type { Tx } from '../store/store.js';
import type { RuleEngine } from '../tasks/engine.js';
import { openExecutionCounts } from '../tasks/executions.js';
import type { OpenCounts } from '../tasks/workflow-status.js';
import type { AppliedTick, Scheduler } from '../schedules/scheduler.js';
import { DeferredStart } from './deferred-start.js';
import {
  addQueueRunners,
  addRetention,
  addRuleEngine,
  addScheduler,
  countersOf,
  loadPlugins,
  makeSupervisor,
  prepareBackends,
} from './work.js';

/** How long readiness trusts its last look at Baton's schema in the store. */
const SCHEMA_CHECK_MS = 5_000;

export type NodeState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

export class BatonNode implements HttpNode {
  readonly config: ResolvedConfig;
  readonly log: Logger;
  readonly consumer: string;
  /** Prometheus metrics, read from this node at scrape time. */
  readonly metrics: NodeMetrics;
  #state: NodeState = 'idle';
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  /** What start() opened, released in reverse order. */
  readonly #releases: Array<{ what: string; release: () => Promise<void> }> = [];
  #backends: Backends | undefined;
  #admin: StoreAdmin | undefined;
  #http: { readonly address: string; close(): Promise<void> } | undefined;
  #unsubscribeRole: (() => void) | undefined;
  #processors = new Map<string, RecordProcessor>();
  #group: Group | undefined;
  #supervisor: Supervisor | undefined;
  #events: EventLog | undefined;
  #ruleEngine: RuleEngine | undefined;
  #scheduler: Scheduler | undefined;
  #watchdog: Watchdog | undefined;
  readonly #routes: RouteRegistrar | undefined;
  #schemaCheck: { at: number; problem: Promise<string | undefined> } | undefined;
  #latestMigration: Promise<string> | undefined;
  readonly #extraComponents: readonly Component[];
  /** The start-up of a node whose store takes no writes (a standby), completed once it takes them. */
  #deferredStart: DeferredStart | undefined;

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
    this.metrics = new NodeMetrics({
      name: config.node.name,
      role: () => this.role,
      term: () => this.term,
      failoverCount: () => this.#group?.failoverCount ?? 0,
      events: () => this.#events,
      queues: () => this.admin.queues(),
      workflowExecutions: () => this.#workflowExecutions(),
    });
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

  /** Configured queue names, in config order. */
  get queueNames(): string[] {
    return Object.keys(this.config.queues);
  }

  /** The admin operations (queues, error queues, sql, migrations, group, task runs) on this node's store. */
  get admin(): Admin {
    if (!this.#admin || this.#state === 'stopped' || this.#state === 'failed') {
      throw new NotRunningError(`node ${this.name} is ${this.#state}`);
    }
    return this.#admin;
  }

  /** The event log, when `[events] enabled` (the default) and the node runs. */
  get events(): EventLog | undefined {
    return this.#events;
  }

  /** The schedules of the config, by name (the primary fires them). */
  get schedules(): Readonly<Record<string, ScheduleConfig>> {
    return this.config.schedules;
  }

  /** The workflows of the config, by name (the primary's rule engine runs their executions). */
  get workflows(): Readonly<Record<string, WorkflowConfig>> {
    return this.config.workflows;
  }

  get tasksConfigured(): boolean {
    return this.#ruleEngine !== undefined;
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

  /** The components and their state (running, backing off after a failure, …). */
  components(): ComponentStatus[] {
    return this.#supervisor?.status() ?? [];
  }

  /** Accepts records into a queue: processed inline when the queue's backend offers it, else queued. */
  async ingest(
    queue: string,
    records: readonly Buffer[],
    options: RecordOptions = {},
  ): Promise<IngestResult> {
    const processor = this.#processors.get(queue);
    if (!processor) throw new UnknownQueueError(queue, this.queueNames);
    // Refused with the reason and Retry-After, rather than with the database's refusal of the write.
    const waiting = this.#deferredStart?.waiting;
    if (waiting !== undefined) throw new BackendUnavailableError('store', waiting);
    return ingestRecords(this.#open().backendFor(queue), processor, records, {
      inline: this.#state === 'running',
      consumer: this.consumer,
      log: this.log,
      onCommitted: (seconds) => this.metrics.observeBatch(queue, seconds, 'committed'),
      records: options,
    });
  }

  /** The handler calls running now: what a crash log names. */
  handlerCalls(): HandlerCall[] {
    return this.#watchdog?.running() ?? [];
  }

  queueCounters(): CountersByQueue {
    return countersOf(this.#processors);
  }

  /**
   * Accepts records into a queue; returns how many. With `{ delayMs }` or `{ runAt }`, none of them runs
   * before that time (BadRequestError for both, a negative delay, or one more than 365 days ahead).
   */
  async publish(queue: string, records: readonly Buffer[], options?: PublishOptions): Promise<number> {
    return (await this.ingest(queue, records, toRecordOptions(options, records.length))).accepted;
  }

  /** Resolves true when the node runs, its backends answer and the store holds Baton's schema. */
  async ready(): Promise<boolean> {
    return (await this.readiness()).ready;
  }

  /** Whether the node is ready (GET /readyz), and why not when it is not. */
  async readiness(): Promise<Readiness> {
    // Said from the moment it is known, while the node still starts as well as once it runs.
    const waiting = this.#deferredStart?.waiting;
    if (waiting !== undefined && (this.#state === 'starting' || this.#state === 'running')) {
      return { ready: false, reason: waiting };
    }
    if (this.#state !== 'running') return { ready: false, reason: `the node is ${this.#state}` };
    // One look at each backend per probe: whether it answers, and what keeps it from serving.
    const [answering, problems] = await Promise.all([this.#backends?.ready(), this.problems()]);
    if (problems.length > 0) return { ready: false, reason: problems.join('; '), problems };
    if (answering !== true) return { ready: false, reason: 'the store or a queue backend does not answer' };
    const schema = await this.#schemaProblem();
    return schema === undefined ? { ready: true } : { ready: false, reason: schema };
  }

  /** Looks at Baton's schema in the store at most once per SCHEMA_CHECK_MS, however often probes come. */
  #schemaProblem(): Promise<string | undefined> {
    const store = this.#backends?.store;
    if (store === undefined) return Promise.resolve(undefined);
    if (this.#schemaCheck === undefined || Date.now() - this.#schemaCheck.at >= SCHEMA_CHECK_MS) {
      this.#latestMigration ??= builtinMigrations().then((migrations) => migrations.at(-1)?.id ?? '');
      const check = { at: Date.now(), problem: Promise.resolve<string | undefined>(undefined) };
      // A failed look is not kept: the next probe looks again.
      check.problem = this.#latestMigration
        .then((latest) => missingSchema(store, latest))
        .catch(() => {
          if (this.#schemaCheck === check) this.#schemaCheck = undefined;
          // /readyz is open to anyone: the database's own words stay in the log of what failed with it.
          return "could not look at Baton's schema in the store";
        });
      this.#schemaCheck = check;
    }
    return this.#schemaCheck.problem;
  }

  /** What keeps the node's backends from serving although they answer (e.g. a Redis key of the wrong type). */
  async problems(): Promise<string[]> {
    return (await this.#backends?.problems()) ?? [];
  }

  /** Open executions per configured workflow, and of any other workflow that has some; none read without workflows. */
  async #workflowExecutions(): Promise<OpenCounts> {
    const names = Object.keys(this.config.workflows);
    if (names.length === 0) return {};
    const counts = await openExecutionCounts(this.#open().store);
    return { ...Object.fromEntries(names.map((name) => [name, { queued: 0, running: 0 }])), ...counts };
  }

  renderMetrics(): Promise<{ contentType: string; body: string }> {
    return this.metrics.render();
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

  async #start(): Promise<void> {
    this.#setState('starting');
    try {
      const { config, log } = this;
      // Said at once, so that a node busy loading its handlers or opening its store never looks stuck.
      log.info(
        { queues: this.queueNames, store: config.store.kind },
        `node ${this.name} starting: loading handlers, then opening the ${config.store.kind} store`,
      );
      // Handlers and components first: a broken one is a config error, found before anything is opened.
      const { handlers, components } = await loadPlugins(config, this.#extraComponents);
      // A store that takes no writes (a standby) is opened all the same: what the start-up writes waits.
      const backends = await openBackends(config, log, { deferWrites: true });
      this.#backends = backends;
      this.#opened('backends', () => backends.close());
      let events: EventLog | undefined;
      if (config.events.enabled) {
        events = new EventLog(backends.store, log);
        this.#events = events;
        this.#opened('event log', () => events?.close() ?? Promise.resolve());
      }

      const group = new Group({
        config: config.group,
        node: this.name,
        store: backends.store,
        log,
        storeUrl: config.store.kind === 'postgres' ? config.store.url : undefined,
        address: () => this.address,
        startupTimeoutMs: config.node.startupTimeoutMs,
        storeWritable: () => this.#deferredStart?.waiting === undefined,
        beforePrimary: () => this.#deferredStart?.complete() ?? Promise.resolve(),
      });
      this.#group = group;
      this.#opened('group', () => group.stop());
      // A handler that blocks the event loop past its deadline ends the process (see watchdog.ts).
      const watchdog = new Watchdog({ node: this.name });
      this.#watchdog = watchdog;
      this.#opened('watchdog', () => watchdog.stop());
      const supervisor = makeSupervisor(config, backends.store, log);
      this.#supervisor = supervisor;
      for (const component of components) supervisor.add(component);
      const parts = { config, events, backends, supervisor, log, url: () => this.address };
      this.#ruleEngine = addRuleEngine({
        ...parts,
        onExecutionEnded: (workflow, state) => this.metrics.countEndedExecution(workflow, state),
      });
      this.#scheduler = await addScheduler({
        ...parts,
        wakeTasks: () => this.#ruleEngine?.wake(),
        onTick: (schedule, latenessMs, cause) => this.metrics.observeTick(schedule, latenessMs, cause),
        onMissed: (schedule, count) => this.metrics.countMissedTicks(schedule, count),
        opened: (what, release) => this.#opened(what, release),
      });
      this.#processors = addQueueRunners({
        ...parts,
        handlers,
        consumer: this.consumer,
        watch: watchdog,
        fencing: { term: () => this.term, assertPrimary: (tx) => this.assertPrimary(tx) },
        onBatch: (queue, seconds, outcome) => this.metrics.observeBatch(queue, seconds, outcome),
      });
      addRetention(config, events, this.#ruleEngine !== undefined, supervisor);
      const deferredStart = new DeferredStart(backends.readOnly, {
        name: this.name,
        queueNames: this.queueNames,
        log,
        elector: config.group?.elector,
        group,
        events,
        state: () => this.#state,
        store: () => this.#open().store,
        address: () => this.address,
        writeAtStart: () => this.#writeAtStart(handlers),
        startWork: () => this.#startWork(),
        followRole: () => this.#followRole(),
      });
      this.#deferredStart = deferredStart;
      if (deferredStart.waiting === undefined) await this.#writeAtStart(handlers);

      this.#admin = new StoreAdmin({
        config,
        backends,
        log,
        group: nodeGroupAccess(
          group,
          () => this.queueCounters(),
          config.http.adminToken,
          (name) => this.#fireSchedule(name),
        ),
        node: {
          ingest: (queue, records, options) => this.ingest(queue, records, options),
          handlers,
          events,
          stopRequested: () => this.#ruleEngine?.wake(),
        },
      });
      if (config.http.enabled) {
        const http = await startHttpServer(this, config.http, log, this.#routes);
        this.#http = http;
        this.#opened('HTTP API', () => http.close());
        await backends.lock?.setAddress(http.address);
      }
      const waiting = deferredStart.waiting;
      if (waiting === undefined) {
        await group.start();
        await this.#startWork();
        this.#setState('running');
        this.#followRole();
        log.info(
          { queues: this.queueNames, http: this.address, store: config.store.kind },
          `node ${this.name} running: queues ${this.queueNames.join(', ')}${this.address ? `, HTTP on ${this.address}` : ''}`,
        );
      } else {
        // The store takes no writes (a standby): the node runs, and completes its start-up once it takes them.
        await deferredStart.startWaiting();
        this.#setState('running');
        const alsoElection = config.group?.elector === 'pg-recovery' ? '' : ', the election';
        log.warn(
          { store: config.store.kind, reason: waiting, http: this.address },
          `node ${this.name} running as ${this.role}, not ready: ${waiting} (Baton's migrations, consumer ` +
            `registration, LISTEN, membership heartbeats${alsoElection} and queue work wait until the store ` +
            `takes writes)${this.address ? `; HTTP on ${this.address}` : ''}`,
        );
        deferredStart.lookForWrites();
      }
    } catch (error) {
      this.#setState('failed');
      await this.#release();
      throw error;
    }
  }

  /** One tick of a schedule now, by this node's scheduler (it runs while the node acts as primary). */
  #fireSchedule(name: string): Promise<AppliedTick> {
    if (!this.#scheduler)
      return Promise.reject(new NotFoundError(`unknown schedule "${name}": none is configured`));
    return this.#scheduler.fire(name);
  }

  /** What the start-up writes to the store: migrations, handler tables, consumer registration, LISTEN. */
  async #writeAtStart(handlers: readonly Handler[]): Promise<void> {
    const backends = this.#open();
    // A promoted standby holds the schema its old primary had: most often current, and then a look
    // suffices where migrating would take the schema lock and write, on the way to acting as primary.
    const schemaCurrent =
      backends.readOnly !== undefined && (await schemaIsCurrent(backends.store, this.config, handlers));
    const migrated = await backends.completeOpening({ migrate: !schemaCurrent });
    await prepareBackends(backends, this.config, handlers, {
      consumer: this.consumer,
      log: this.log,
      migrated,
      schemaCurrent,
    });
    await this.#events?.start();
    await this.#ruleEngine?.prepare();
  }

  async #startWork(): Promise<void> {
    const supervisor = this.#supervisor;
    if (!supervisor) return;
    await supervisor.start();
    this.#opened('supervisor', () => supervisor.stop());
  }

  /**
   * The supervisor is the one role gate. The first call (at once) starts what this role runs; later calls
   * follow the role: a step-down aborts primary-only work at once. Not awaited, so that a slow stop never
   * delays the next change.
   */
  #followRole(): void {
    const group = this.#group;
    const supervisor = this.#supervisor;
    if (!group || !supervisor) return;
    this.#unsubscribeRole = group.roles.subscribe(
      (change) => void supervisor.setRole(change.new, change.term),
    );
  }

  async #stop(): Promise<void> {
    await this.#starting?.catch(() => undefined);
    if (this.#state !== 'running') return;
    this.#setState('stopping');
    await this.#deferredStart?.stop();
    // Queue runners stop claiming and finish their in-flight batches within shutdown_timeout_ms; past it they
    // are aborted (NodeStoppingError) and their batches given back. Leadership is released once the
    // primary-only work stopped, so that another node takes over safely while the rest still drains; the
    // HTTP API stops accepting requests then, and the release stack closes the rest.
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

  /** Pushes onto the release stack. */
  #opened(what: string, release: () => Promise<void>): void {
    this.#releases.push({ what, release });
  }

  /** Releases what start() opened, newest first, past any failure. */
  async #release(): Promise<void> {
    for (let entry = this.#releases.pop(); entry; entry = this.#releases.pop()) {
      await entry.release().catch((error: unknown) => {
        this.log.error({ err: describeError(error) }, `error while releasing the ${entry?.what}`);
      });
    }
  }

  #roles(): Group['roles'] {
    if (!this.#group)
      throw new NotRunningError(`node ${this.name} is ${this.#state}: roles are known once it runs`);
    return this.#group.roles;
  }

  #open(): Backends {
    if (!this.#backends || this.#state === 'stopped' || this.#state === 'failed') {
      throw new NotRunningError(`node ${this.name} is ${this.#state}`);
    }
    return this.#backends;
  }

  #setState(state: NodeState): void {
    this.log.debug({ from: this.#state, to: state }, `node ${state}`);
    this.#state = state;
  }
}
