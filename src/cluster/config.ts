// The resolved [group] settings of a node (see docs/config.md). No [group]: the node is not in a group.

export type ElectorKind = 'standalone' | 'postgres' | 'redis' | 'pg-recovery';

export interface GroupConfig {
  readonly name: string;
  readonly elector: ElectorKind;
  /** Coordination backend: a postgres:// URL (postgres, pg-recovery) or a redis:// URL (redis). */
  readonly url: string | undefined;
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
