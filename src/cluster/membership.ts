// Membership: each node heartbeats into the coordination backend (with its address, role and term), so that
// `baton status` and GET /v1/cluster can list the group from any node. Adapters: the store (baton_members)
// and Redis.
import type { Member, Role } from './types.js';

export interface MemberReport {
  readonly node: string;
  readonly address: string | undefined;
  readonly role: Role;
  readonly term: number;
}

export interface Membership {
  /** Records this node as alive now, with what it reports. */
  heartbeat(report: MemberReport): Promise<void>;
  /** Members seen within `withinMs`, by name. */
  list(withinMs: number): Promise<Member[]>;
  /** Removes this node (it is leaving). */
  leave(node: string): Promise<void>;
  close(): Promise<void>;
}
