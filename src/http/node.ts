// What the HTTP API needs of a node: its admin operations, ingest, health, role and metrics. The node
// implements it; the routes know nothing else of it.
import type { Admin } from '../admin/admin.js';
import type { Role } from '../cluster/types.js';
import type { ComponentStatus } from '../components/supervisor.js';
import type { EventsConfig, ScheduleConfig, WorkflowConfig } from '../config/types.js';
import type { EventLog } from '../events/log.js';
import type { RecordOptions } from '../queue/record-options.js';
import type { IngestResult } from '../queue/ingest.js';
import type { CountersByQueue } from '../queue/processor.js';

export interface Readiness {
  readonly ready: boolean;
  /** Why the node is not ready (e.g. the store lacks Baton's schema). */
  readonly reason?: string;
  /** What keeps backends that answer from serving (e.g. a Redis key of the wrong type), one sentence each. */
  readonly problems?: readonly string[];
}

export interface HttpNode {
  readonly name: string;
  readonly state: string;
  readonly queueNames: readonly string[];
  readonly admin: Admin;
  /** Accepts records into a queue; records with a delay (checked by checkDelay) wait for their time. */
  ingest(queue: string, records: readonly Buffer[], options?: RecordOptions): Promise<IngestResult>;
  /** Records processed and failed per queue by this node since it started. */
  queueCounters(): CountersByQueue;
  /** Whether the node is ready (GET /readyz), and why not when it is not. */
  readiness(): Promise<Readiness>;
  readonly role: Role;
  readonly term: number;
  readonly leader: string | undefined;
  components(): ComponentStatus[];
  /** The event log; undefined when `[events] enabled = false`. */
  readonly events: EventLog | undefined;
  /** The limits of the event API (`[events]`). */
  readonly config: { readonly events: EventsConfig };
  /** The schedules of the node's config, by name. */
  readonly schedules: Readonly<Record<string, ScheduleConfig>>;
  /** The workflows of the node's config, by name. */
  readonly workflows: Readonly<Record<string, WorkflowConfig>>;
  /** True when tasks are configured (the dashboard then shows their runs). */
  readonly tasksConfigured: boolean;
  /** Prometheus metrics in the text format. */
  renderMetrics(): Promise<{ contentType: string; body: string }>;
}
