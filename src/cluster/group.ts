// A node's place in its group: it runs the elector, raises the fence in the sink before acting as primary,
// heartbeats its membership, and publishes role changes. Without a [group], the node is not in a group:
// it acts alone (role 'not-in-group', term 0) and nothing is fenced.
import type { GroupConfig } from '../config/types.js';
import { describeError, FencedError } from '../errors.js';
import type { Logger } from '../log.js';
import { applyMigrations, builtinMigrations } from '../store/migrate.js';
import { openPostgresStore } from '../store/postgres.js';
import type { Store, Tx } from '../store/store.js';
import { makeElector } from './elector-factory.js';
import { assertFence, raiseFence } from './fence.js';
import type { Membership } from './membership.js';
import { RedisMembership } from './membership-redis.js';
import { StoreMembership } from './membership-store.js';
import { RoleEvents } from './role-events.js';
import type { Elector, ElectorState, Failover, GroupStatus, StateCause } from './types.js';

const FAILOVER_HISTORY = 50;

export class Group {
  readonly roles: RoleEvents;
  readonly #config: GroupConfig | undefined;
  readonly #node: string;
  readonly #store: Store;
  readonly #log: Logger;
  readonly #address: () => string | undefined;
  readonly #failovers: Failover[] = [];
  #failoverCount = 0;
  #elector: Elector | undefined;
  #membership: Membership | undefined;
  readonly #storeUrl: string | undefined;
  #startupTimeoutMs = 30_000;
  #heartbeat: NodeJS.Timeout | undefined;
  /** The term this node acts under as primary; undefined while it is not primary. */
  #actingTerm: number | undefined;
  #lastActingTerm = 0;
  /** Serialises elector reports: the fence must be raised before a 'primary' state is published. */
  #applying: Promise<void> = Promise.resolve();
  #stopped = false;
  /** True while the members' heartbeats go to the store itself (not Redis or a coordination database). */
  #membershipOnStore = false;
  #joined: Promise<void> | undefined;
  readonly #storeWritable: () => boolean;
  readonly #beforePrimary: () => Promise<void>;

  constructor(options: {
    config: GroupConfig | undefined;
    node: string;
    store: Store;
    log: Logger;
    /** The store's URL when it is a PostgreSQL server: a postgres elector on another database keeps members there. */
    storeUrl: string | undefined;
    address: () => string | undefined;
    startupTimeoutMs?: number;
    /**
     * False while the store takes no writes (a standby): heartbeats kept in the store wait. Default: always true.
     */
    storeWritable?: () => boolean;
    /**
     * Awaited before the fence is raised for a promotion: the node's deferred start-up. Rejecting means the
     * node cannot act as primary yet (the promotion is refused, and an elector that follows a server's role
     * reports it again later).
     */
    beforePrimary?: () => Promise<void>;
  }) {
    this.#config = options.config;
    this.#node = options.node;
    this.#store = options.store;
    this.#log = options.log.child({ component: 'group' });
    this.#address = options.address;
    this.#storeUrl = options.storeUrl;
    this.#storeWritable = options.storeWritable ?? (() => true);
    this.#beforePrimary = options.beforePrimary ?? (() => Promise.resolve());
    this.roles = new RoleEvents(
      options.config
        ? { role: 'secondary', term: 0, leader: undefined }
        : { role: 'not-in-group', term: 0, leader: undefined },
      this.#log,
    );
    if (options.config) {
      this.#elector = makeElector(options.config, options.node, options.store, this.#log);
      this.#startupTimeoutMs = options.startupTimeoutMs ?? 30_000;
    }
  }

  get state(): ElectorState {
    return this.roles.state;
  }

  /** Starts the membership heartbeat (if not yet), then the elector: its first state is applied before this resolves. */
  async start(): Promise<void> {
    if (!this.#config || !this.#elector) return;
    await this.joinMembership();
    await this.#elector.start((state, cause) => {
      this.#applying = this.#applying.then(() => this.#apply(state, cause));
    });
    await this.#applying;
    await this.#beat();
  }

  /**
   * Opens the membership and heartbeats this node's role there, without running the elector: a node whose
   * store takes no writes yet is seen by its group (when the heartbeats go elsewhere) before it may be
   * elected. Idempotent.
   */
  joinMembership(): Promise<void> {
    this.#joined ??= this.#joinMembership();
    return this.#joined;
  }

  async #joinMembership(): Promise<void> {
    const config = this.#config;
    if (!config) return;
    const membership = await openMembership(
      config,
      this.#store,
      this.#storeUrl,
      this.#log,
      this.#startupTimeoutMs,
    );
    this.#membership = membership;
    this.#membershipOnStore = membership instanceof StoreMembership;
    await this.#beat();
    this.#heartbeat = setInterval(() => void this.#beat(), config.heartbeatMs);
    this.#heartbeat.unref();
  }

  /**
   * Inside the caller's transaction: throws FencedError unless this node is the group's primary and the
   * fence is still at the term it acts under. A node that stepped down is refused at once; one that was
   * deposed without knowing it yet (a partition, a long pause) is refused by the fence.
   */
  async assertPrimary(tx: Tx): Promise<void> {
    if (!this.#config) return; // alone: nothing to fence against
    if (this.#actingTerm === undefined) throw new FencedError(this.#lastActingTerm, this.state.term);
    await assertFence(tx, this.#config.name, this.#actingTerm);
  }

  /** Changes of primary seen by this node since it started (the history keeps the latest only). */
  get failoverCount(): number {
    return this.#failoverCount;
  }

  /** Manual failover: the primary yields (to `to` when named). */
  async failover(to?: string): Promise<void> {
    await this.#elector?.resign(to === undefined ? {} : { to });
  }

  /**
   * This node's view of the group. Its role, term and primary are known here, so they are answered even when
   * the members cannot be read (the store down): members are then empty and `membersProblem` says why.
   */
  async status(): Promise<GroupStatus> {
    let members: GroupStatus['members'] = [];
    let membersProblem: string | undefined;
    if (this.#membership && this.#config) {
      try {
        members = await this.#membership.list(this.#config.leaseMs * 3);
      } catch (error) {
        this.#log.debug({ err: describeError(error) }, 'cannot list the members of the group');
        membersProblem = 'the members of the group cannot be read now (their backend does not answer)';
      }
    }
    return {
      group: this.#config?.name,
      elector: this.#config?.elector,
      node: this.#node,
      ...this.state,
      members,
      ...(membersProblem === undefined ? {} : { membersProblem }),
      failovers: [...this.#failovers],
    };
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#heartbeat);
    await this.#elector
      ?.stop()
      .catch((error: unknown) => this.#log.warn({ err: describeError(error) }, 'elector stop failed'));
    await this.#applying;
    await this.#membership?.leave(this.#node).catch(() => undefined);
    await this.#membership?.close().catch(() => undefined);
  }

  async #apply(state: ElectorState, cause: StateCause): Promise<void> {
    if (this.#stopped && state.role === 'primary') return;
    let next = state;
    if (state.role === 'primary' && this.#config) {
      // The node's start-up first (a store that was a standby): nothing acts as primary before it is done.
      const prepared = await this.#beforePrimary().then(
        () => true,
        (error: unknown) => {
          const err = describeError(error);
          this.#log.warn({ err, term: state.term }, `not acting as primary yet: ${err}`);
          return false;
        },
      );
      // Raise the fence before acting: a deposed primary's later checks then fail.
      const raised =
        prepared &&
        (await raiseFence(this.#store, this.#config.name, state.term, {
          log: this.#log,
        }).catch((error: unknown) => {
          this.#log.error(
            { err: describeError(error), term: state.term },
            'cannot raise the fence: not acting as primary',
          );
          return false;
        }));
      if (!raised) {
        next = { role: 'secondary', term: state.term, leader: undefined };
        await this.#elector?.resign({ refused: true }).catch(() => undefined);
      }
    }
    const previous = this.state;
    if (next.term !== previous.term || next.leader !== previous.leader || next.role !== previous.role) {
      this.#log.info(
        { role: next.role, term: next.term, leader: next.leader, cause: cause.cause },
        `role ${next.role} (term ${next.term}${next.leader ? `, primary ${next.leader}` : ''}): ${cause.message}`,
      );
    }
    if (next.role === 'primary' || (next.leader !== undefined && next.leader !== previous.leader)) {
      this.#failoverCount++;
      this.#failovers.unshift({ at: new Date(), term: next.term, leader: next.leader, cause: cause.cause });
      this.#failovers.length = Math.min(this.#failovers.length, FAILOVER_HISTORY);
    }
    if (next.role === 'primary') {
      this.#actingTerm = next.term;
      this.#lastActingTerm = next.term;
    } else {
      this.#actingTerm = undefined;
    }
    this.roles.update(next, cause);
    void this.#beat();
  }

  async #beat(): Promise<void> {
    if (!this.#membership || this.#stopped) return;
    // A store that takes no writes (a standby) cannot keep heartbeats: they start once it takes them.
    if (this.#membershipOnStore && !this.#storeWritable()) return;
    const { role, term } = this.state;
    try {
      await this.#membership.heartbeat({ node: this.#node, address: this.#address(), role, term });
    } catch (error) {
      this.#log.warn({ err: describeError(error) }, 'membership heartbeat failed');
    }
  }
}

/**
 * Where a group's members heartbeat: Redis for the redis elector; the postgres elector's own database when
 * group.url is not the store's (Baton's tables are created there); the store otherwise.
 */
export async function openMembership(
  config: GroupConfig,
  store: Store,
  storeUrl: string | undefined,
  log: Logger,
  startupTimeoutMs: number,
): Promise<Membership> {
  if (config.elector === 'redis') {
    return new RedisMembership({ url: config.url, group: config.name, log });
  }
  if (config.elector !== 'postgres' || config.url === storeUrl) {
    return new StoreMembership(store, config.name);
  }
  const coordination = await openPostgresStore(
    { kind: 'postgres', url: config.url, schema: store.schema, poolSize: 2, statementTimeoutMs: 0 },
    { log, startupTimeoutMs, applicationName: 'baton-group' },
  );
  await applyMigrations(coordination, await builtinMigrations(), undefined, { log });
  const membership = new StoreMembership(coordination, config.name);
  return {
    heartbeat: (report) => membership.heartbeat(report),
    list: (withinMs) => membership.list(withinMs),
    leave: (node) => membership.leave(node),
    async close() {
      await membership.close();
      await coordination.close();
    },
  };
}
