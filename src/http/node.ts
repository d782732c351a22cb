// What the HTTP API needs of a node: the admin operations plus ingest and health.
import type { Role } from '../cluster/types.js';
import type { EventsConfig } from '../config/types.js';
import type { ComponentStatus } from '../components/supervisor.js';
import type { Admin } from '../node/admin.js';
import type { GroupStatus } from '../cluster/types.js';
import type { EventLog } from '../events/log.js';
import type { NodeMetrics } from '../metrics/metrics.js';
import type { IngestResult } from '../queue/ingest.js';

export interface HttpNode extends Admin {
  readonly name: string;
  readonly state: string;
  readonly queueNames: readonly string[];
  ingest(queue: string, records: readonly Buffer[]): Promise<IngestResult>;
  ready(): Promise<boolean>;
  readonly role: Role;
  readonly term: number;
  readonly leader: string | undefined;
  cluster(): Promise<GroupStatus>;
  failover(to?: string): Promise<void>;
  components(): ComponentStatus[];
  /** The event log; undefined when `[events] enabled = false`. */
  readonly events: EventLog | undefined;
  /** The limits of the event API (`[events]`). */
  readonly config: { readonly events: EventsConfig };
  readonly metrics: NodeMetrics;
  /** The latest task runs as JSON rows (newest first), when tasks are configured; for the dashboard. */
  recentTaskRuns?(limit: number): Promise<Array<Record<string, unknown>> | null>;
}
