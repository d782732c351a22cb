// The words of groups and roles, and the Elector port. A group of nodes elects one primary; the term grows
// by one with each new primary and is the fencing token. An elector decides this node's role; it does not
// run components, write the fence in the sink or deliver events to subscribers: the node does.

/** primary: the one node of its group that does primary-only work; not-in-group: alone, and may act. */
export type Role = 'primary' | 'secondary' | 'not-in-group';

/** What an elector knows at a moment. */
export interface ElectorState {
  readonly role: Role;
  /** The group's current term as this node knows it (0 before any election). */
  readonly term: number;
  /** Name of the primary, when known. */
  readonly leader: string | undefined;
}

/** Why a state changed, in a word and in a sentence (leader-watch events carry both). */
export interface StateCause {
  /** e.g. 'elected', 'lost-lease', 'renew-failed', 'new-leader', 'leader-gone', 'resigned', 'stopped', 'unreachable', 'promoted', 'demoted' */
  readonly cause: string;
  readonly message: string;
}

export type ElectorListener = (state: ElectorState, cause: StateCause) => void;

export interface ElectorOptions {
  /** This node's name (unique in the group). */
  readonly node: string;
  readonly group: string;
  /** How long a lease lasts without renewal. */
  readonly leaseMs: number;
  /** A primary that could not renew for this long steps down (< leaseMs), before anyone may take over. */
  readonly renewDeadlineMs: number;
  /** How often the primary renews and the others look. */
  readonly heartbeatMs: number;
}

/**
 * Decides this node's role in its group. `start` delivers the first state through the listener before it
 * resolves (secondary while an election is undecided), then every change. The listener must not block.
 * An elector never throws after start: a lost backend makes the node secondary while it retries.
 */
export interface Elector {
  readonly kind: 'standalone' | 'postgres' | 'redis' | 'pg-recovery';
  start(listener: ElectorListener): Promise<void>;
  /**
   * Manual failover: when primary, step down and let another node take over (`to` names the one that
   * should; others defer to it while it is alive). A no-op on a secondary, which forwards nothing itself.
   * `refused`: the node could not act on the promotion this elector reported (its fence raise failed); an
   * elector whose role follows something outside the group (pg-recovery) then reports it again later.
   */
  resign(options?: { to?: string; refused?: boolean }): Promise<void>;
  /** Leaves the group: steps down at once (releasing leadership) and stops watching. Idempotent. */
  stop(): Promise<void>;
}

/** A member of the group as the coordination backend sees it. */
export interface Member {
  readonly node: string;
  /** Base URL of the node's HTTP API, when it serves one. */
  readonly address: string | undefined;
  readonly role: Role;
  readonly term: number;
  readonly lastSeen: Date;
}

/** Node-role-changed event: `previous` is null on the first call, made at once on subscribe. */
export interface RoleChange {
  readonly previous: Role | null;
  readonly new: Role;
  readonly term: number;
  /** Name of the primary, when known. */
  readonly leader: string | undefined;
}

export type LeaderWatchEventType = 'become-leader' | 'become-follower';

/** What a leader watch receives (the Raft leader-watch map, with Baton's words). */
export interface LeaderWatchEvent {
  readonly key: string;
  readonly event: LeaderWatchEventType;
  readonly cause: string;
  readonly message: string;
  readonly oldLeader: string | undefined;
  readonly newLeader: string | undefined;
  readonly previous: Role;
  readonly new: Role;
  readonly term: number;
}

/** The group as one node sees it: role, term, primary, members, recent failovers. */
export interface GroupStatus {
  readonly group: string | undefined;
  readonly elector: string | undefined;
  readonly node: string;
  readonly role: Role;
  readonly term: number;
  readonly leader: string | undefined;
  readonly members: readonly Member[];
  /** Why `members` is empty although the node is in a group: they could not be read (the store down). */
  readonly membersProblem?: string;
  readonly failovers: readonly Failover[];
}

/** A change of primary seen by a node. */
export interface Failover {
  readonly at: Date;
  readonly term: number;
  readonly leader: string | undefined;
  readonly cause: string;
}
