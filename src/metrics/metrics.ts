// Prometheus metrics of one node, served at /metrics. Most values are read from the node when scraped
// (queue stats, counters, role, term, the event log), so the hot paths pay nothing for them; the batch
// duration histogram is observed as batches end. Process metrics (memory, event-loop delay, GC) come with
// prom-client's defaults, prefixed `baton_`.
import type { CounterConfiguration, Metric } from 'prom-client';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

import type { Role } from '../cluster/types.js';
import type { EventLog } from '../events/log.js';
import type { QueueInfo } from '../queue/backend.js';
import { DELAYED_COUNT_CAP } from '../queue/store-queue.js';
import type { BatchOutcome } from '../queue/runner.js';
import type { OpenCounts } from '../tasks/workflow-status.js';

/** How long one reading of the queues serves the metrics of a scrape. */
const SNAPSHOT_MS = 1_000;
const ROLES: readonly Role[] = ['primary', 'secondary', 'not-in-group'];

/** What the metrics read from the node at scrape time. */
export interface MetricsSource {
  readonly name: string;
  role(): Role;
  term(): number;
  failoverCount(): number;
  events(): EventLog | undefined;
  queues(): Promise<QueueInfo[]>;
  /** Queued and running executions per workflow (the configured ones included at 0). */
  workflowExecutions(): Promise<OpenCounts>;
}

export class NodeMetrics {
  readonly registry = new Registry();
  readonly #batchSeconds: Histogram<'queue' | 'outcome'>;
  readonly #tickLateness: Histogram<'schedule' | 'cause'>;
  readonly #missedTicks: Counter<'schedule'>;
  readonly #endedExecutions: Counter<'workflow' | 'state'>;

  constructor(source: MetricsSource) {
    const registry = this.registry;
    registry.setDefaultLabels({ node: source.name });
    collectDefaultMetrics({ register: registry, prefix: 'baton_' });

    // Queue stats are read once per scrape and shared by the metrics below. A backend that is down leaves
    // the queue metrics out of the scrape rather than failing all of it.
    let cached: { at: number; queues: Promise<QueueInfo[]> } | undefined;
    const queues = (): Promise<QueueInfo[]> => {
      if (cached === undefined || Date.now() - cached.at > SNAPSHOT_MS) {
        cached = { at: Date.now(), queues: source.queues().catch(() => []) };
      }
      return cached.queues;
    };

    totalCounter(registry, {
      name: 'baton_records_processed_total',
      help: 'Records this node processed and committed, per queue.',
      labelNames: ['queue'],
      read: async () => (await queues()).map((queue) => [{ queue: queue.name }, queue.processed ?? 0]),
    });
    totalCounter(registry, {
      name: 'baton_records_failed_total',
      help: 'Failed attempts of records on this node, per queue (a record may fail several times).',
      labelNames: ['queue'],
      read: async () => (await queues()).map((queue) => [{ queue: queue.name }, queue.failed ?? 0]),
    });
    totalCounter(registry, {
      name: 'baton_records_deduplicated_total',
      help: 'Records dropped as duplicates of an idempotency id seen within the dedup window, per queue (the backend keeps the count).',
      labelNames: ['queue'],
      read: async () => (await queues()).map((queue) => [{ queue: queue.name }, queue.deduplicated ?? 0]),
    });
    gauge(registry, 'baton_queue_depth', 'Records waiting in the queue (not claimed).', ['queue'], async () =>
      (await queues()).map((queue) => [{ queue: queue.name }, queue.depth]),
    );
    gauge(
      registry,
      'baton_queue_delayed',
      `Of the records waiting, those not due yet: delayed, or waiting out a retry back-off (a store queue counts up to ${DELAYED_COUNT_CAP}).`,
      ['queue'],
      async () => (await queues()).map((queue) => [{ queue: queue.name }, queue.delayed]),
    );
    gauge(
      registry,
      'baton_queue_in_flight',
      'Records claimed and not yet acknowledged.',
      ['queue'],
      async () => (await queues()).map((queue) => [{ queue: queue.name }, queue.inFlight]),
    );
    gauge(
      registry,
      'baton_errors_waiting',
      'Records in the error queue errors-<queue>.',
      ['queue'],
      async () => (await queues()).map((queue) => [{ queue: queue.name }, queue.errors]),
    );
    this.#batchSeconds = new Histogram({
      name: 'baton_batch_duration_seconds',
      help: 'Time from claiming a batch to its commit or rollback, per queue and outcome (committed, partial, rolled_back).',
      labelNames: ['queue', 'outcome'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    });
    this.#tickLateness = new Histogram({
      name: 'baton_schedule_tick_lateness_seconds',
      help: 'Time from a tick of a schedule to its application on this node, per schedule and cause (on-time, catch-up, manual).',
      labelNames: ['schedule', 'cause'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    });
    this.#missedTicks = new Counter({
      name: 'baton_schedule_missed_ticks_total',
      help: 'Ticks of a schedule that fell while no primary acted and that this node counted as missed when it took over (by the missed policy).',
      labelNames: ['schedule'],
      registers: [registry],
    });
    this.#endedExecutions = new Counter({
      name: 'baton_workflow_executions_ended_total',
      help: 'Executions of a workflow that the rule engine of this node ended, by their final state.',
      labelNames: ['workflow', 'state'],
      registers: [registry],
    });
    gauge(
      registry,
      'baton_workflow_executions',
      'Executions of a workflow queued (waiting for max_concurrent) and running, read from the store.',
      ['workflow', 'state'],
      async () =>
        Object.entries(await source.workflowExecutions().catch(() => ({}))).flatMap(([workflow, counts]) =>
          (['queued', 'running'] as const).map((state) => [{ workflow, state }, counts[state]] as const),
        ),
    );
    gauge(
      registry,
      'baton_role',
      'The role of this node: 1 for the current role, 0 for the others.',
      ['role'],
      () => ROLES.map((role) => [{ role }, source.role() === role ? 1 : 0]),
    );
    gauge(registry, 'baton_term', 'The group term as this node knows it (0 when not in a group).', [], () => [
      [{}, source.term()],
    ]);
    totalCounter(registry, {
      name: 'baton_failovers_total',
      help: 'Changes of primary this node has seen since it started (the first election included).',
      labelNames: [],
      read: () => [[{}, source.failoverCount()]],
    });
    totalCounter(registry, {
      name: 'baton_events_appended_total',
      help: 'Events this node appended to the event log (resends that were ignored not counted).',
      labelNames: [],
      read: () => [[{}, source.events()?.appended ?? 0]],
    });
    gauge(
      registry,
      'baton_event_log_head_offset',
      'The highest committed offset of the event log.',
      [],
      async () => [
        [
          {},
          (await source
            .events()
            ?.latestOffset()
            .catch(() => source.events()?.head)) ?? 0,
        ],
      ],
    );
    gauge(
      registry,
      'baton_event_listener_lag',
      "Offsets between a named listener's committed offset and the head (for a listener of one namespace, at least its events behind).",
      ['namespace', 'listener'],
      async () =>
        (
          (await source
            .events()
            ?.listenerLags()
            .catch(() => [])) ?? []
        ).map((entry) => [{ namespace: entry.namespace, listener: entry.name }, entry.lag]),
    );
  }

  /** Records one batch: how long it took from claim to commit (or rollback), and how it ended. */
  observeBatch(queue: string, seconds: number, outcome: BatchOutcome): void {
    this.#batchSeconds.observe({ queue, outcome }, seconds);
  }

  /** Records one applied tick of a schedule: how late after its time it was applied. */
  observeTick(schedule: string, latenessMs: number, cause: string): void {
    this.#tickLateness.observe({ schedule, cause }, Math.max(0, latenessMs) / 1000);
  }

  /** Counts ticks of a schedule that a catch-up of this node counted as missed. */
  countMissedTicks(schedule: string, count: number): void {
    this.#missedTicks.inc({ schedule }, count);
  }

  /** Counts an execution that this node's rule engine ended (after its transaction committed). */
  countEndedExecution(workflow: string, state: string): void {
    this.#endedExecutions.inc({ workflow, state });
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

type Labels = Record<string, string>;
type Samples = ReadonlyArray<readonly [Labels, number]>;

/** A gauge whose values are read at scrape time; label sets that disappear are dropped. */
function gauge(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly string[],
  read: () => Samples | Promise<Samples>,
): Metric {
  return new Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    async collect() {
      const samples = await read();
      this.reset();
      for (const [labels, value] of samples) this.set(labels, value);
    },
  });
}

/** A counter whose running totals live in the node (they only grow while it runs): set at scrape time. */
function totalCounter(
  registry: Registry,
  options: Pick<CounterConfiguration<string>, 'name' | 'help' | 'labelNames'> & {
    read: () => Samples | Promise<Samples>;
  },
): Metric {
  const { read, ...config } = options;
  return new Counter({
    ...config,
    registers: [registry],
    async collect() {
      const samples = await read();
      this.reset();
      for (const [labels, value] of samples) this.inc(labels, value);
    },
  });
}
