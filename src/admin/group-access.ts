// How the admin operations reach the group: from a running node (its own place in the group, and the
// primary over HTTP for a failover asked of a secondary), or from a CLI command (the live members listed by
// the membership, asked over HTTP in turn, the primary first, so that a dead member never fails the command).
import type { GroupStatus, Member, Role } from '../cluster/types.js';
import type { ResolvedConfig } from '../config/types.js';
import { BackendUnavailableError, NotInGroupError, NotPrimaryError, UnknownNodeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { CountersByQueue } from '../queue/processor.js';
import type { AppliedTick } from '../schedules/scheduler.js';
import type { FailoverResult } from './admin.js';
import { HttpAdmin } from './http-admin.js';
import type { GroupAccess } from './store-admin.js';

/** How long a CLI command waits for one member before it asks the next. */
const MEMBER_TIMEOUT_MS = 5_000;

/** What a node offers of its place in the group. */
export interface NodeGroup {
  readonly state: { readonly role: Role; readonly leader: string | undefined };
  status(): Promise<GroupStatus>;
  /** Yields when this node is primary (to `to` when named). */
  failover(to?: string): Promise<void>;
}

/** The group as a running node reaches it; `counters` are this node's own. */
export function nodeGroupAccess(
  group: NodeGroup,
  counters: () => CountersByQueue,
  token: string | undefined,
  /** This node's scheduler's fire(), used while it is the primary (or not in a group). */
  fire: (name: string) => Promise<AppliedTick>,
): GroupAccess {
  return {
    async fireSchedule(name: string): Promise<AppliedTick> {
      if (group.state.role === 'primary' || group.state.role === 'not-in-group') return fire(name);
      // A secondary passes the request on to the primary, whose scheduler alone applies ticks.
      const status = await group.status();
      const primary = status.members.find((member) => member.node === status.leader);
      if (!primary?.address) throw new NotPrimaryError(status.role, status.leader);
      return new HttpAdmin(primary.address, { token, timeoutMs: MEMBER_TIMEOUT_MS }).fireSchedule(name);
    },
    status: () => group.status(),
    counters: () => Promise.resolve(counters()),
    async failover(to?: string): Promise<FailoverResult> {
      if (group.state.role === 'not-in-group') {
        throw new NotInGroupError('this node is not in a group: there is nothing to fail over');
      }
      const status = await group.status();
      const unchanged = checkTarget(status.members, status.leader, to);
      if (unchanged) return unchanged;
      if (status.role === 'primary') {
        await group.failover(to);
        return {
          moved: true,
          primary: status.node,
          to,
          message: `${status.node} yielded the primary role${to ? ` to ${to}` : ''}`,
        };
      }
      // A secondary passes the request on to the primary, which alone can yield.
      const primary = status.members.find((member) => member.node === status.leader);
      if (!primary?.address) throw new NotPrimaryError(status.role, status.leader);
      return new HttpAdmin(primary.address, { token, timeoutMs: MEMBER_TIMEOUT_MS }).failover(to);
    },
  };
}

/** What a CLI command needs to list the live members of its config's group. */
export interface MemberList {
  /** The members seen within three leases, by name. */
  list(): Promise<Member[]>;
}

/** The group as a CLI command reaches it: through its live members, one after the other. */
export function memberGroupAccess(
  config: ResolvedConfig,
  members: MemberList | undefined,
  token: string | undefined,
  log: Logger,
): GroupAccess {
  const live = async (): Promise<Member[]> => (members ? await members.list() : []);
  const adminOf = (address: string): HttpAdmin =>
    new HttpAdmin(address, { token, timeoutMs: MEMBER_TIMEOUT_MS });
  /** Asks the members with an address in turn (the primary first) until one answers. */
  const ask = async <T>(
    listed: readonly Member[],
    what: (admin: HttpAdmin) => Promise<T>,
  ): Promise<T | undefined> => {
    const ordered = [...listed].sort((a, b) => Number(b.role === 'primary') - Number(a.role === 'primary'));
    for (const member of ordered) {
      if (!member.address) continue;
      try {
        return await what(adminOf(member.address));
      } catch (error) {
        if (!(error instanceof BackendUnavailableError)) throw error;
        log.debug({ member: member.node }, `member ${member.node} does not answer; asking the next one`);
      }
    }
    return undefined;
  };
  return {
    async status(): Promise<GroupStatus> {
      const listed = await live();
      const answered = await ask(listed, (admin) => admin.cluster());
      if (answered) return answered;
      return {
        group: config.group?.name,
        elector: config.group?.elector,
        node: config.node.name,
        role: config.group ? 'secondary' : 'not-in-group',
        term: 0,
        leader: undefined,
        members: listed,
        failovers: [],
      };
    },
    async failover(to?: string): Promise<FailoverResult> {
      const group = config.group;
      if (!group) throw new NotInGroupError('this config has no [group]: there is nothing to fail over');
      const result = await ask(await live(), (admin) => admin.failover(to));
      if (result) return result;
      throw new BackendUnavailableError(
        `group "${group.name}"`,
        'no live member answers: start one with baton run',
      );
    },
    async fireSchedule(name: string): Promise<AppliedTick> {
      // Any member passes it on to the primary.
      const result = await ask(await live(), (admin) => admin.fireSchedule(name));
      if (result) return result;
      throw new BackendUnavailableError(
        config.group ? `group "${config.group.name}"` : 'node',
        'no live node answers: schedules are fired by a running node (baton run)',
      );
    },
    /** Each live member's own counters, summed; a member that does not answer counts for nothing. */
    async counters(): Promise<CountersByQueue> {
      const addresses = (await live()).flatMap(({ address }) => (address ? [address] : []));
      const answers = await Promise.all(
        addresses.map((address) =>
          adminOf(address)
            .counters()
            .catch(() => undefined),
        ),
      );
      const sums = new Map<string, { processed: number; failed: number }>();
      for (const [queue, { processed, failed }] of answers.flatMap((answer) => [...(answer ?? [])])) {
        const sum = sums.get(queue) ?? { processed: 0, failed: 0 };
        sums.set(queue, { processed: sum.processed + processed, failed: sum.failed + failed });
      }
      return sums;
    },
  };
}

/**
 * Refuses a node that is no live member; answers "nothing moves" when it is the primary already.
 * Undefined: the failover goes ahead.
 */
function checkTarget(
  members: readonly Member[],
  leader: string | undefined,
  to: string | undefined,
): FailoverResult | undefined {
  if (to === undefined) return undefined;
  const live = members.map((member) => member.node);
  if (!live.includes(to)) throw new UnknownNodeError(to, live);
  if (to !== leader) return undefined;
  return { moved: false, primary: leader, to, message: `${to} is the primary already: nothing moves` };
}
