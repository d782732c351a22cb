// Admin operations for a CLI command that runs no node: it opens the store and the queues' backends itself
// (taking the embedded store's lock), reaches the group's live members through the membership, and closes
// everything when done. Publishing only queues records; a node processes them when it runs. The group's
// modules (electors and their drivers) are imported only when a command asks for the members.
import type { Membership } from '../cluster/membership.js';
import type { ResolvedConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import { openBackends } from '../queue/backends.js';
import type { Admin } from './admin.js';
import type { MemberList } from './group-access.js';
import { memberGroupAccess } from './group-access.js';
import { StoreAdmin } from './store-admin.js';

export async function openStoreAdmin(config: ResolvedConfig, log: Logger): Promise<Admin> {
  const backends = await openBackends(config, log, { consume: false });
  const group = config.group;
  let membership: Promise<Membership> | undefined;
  const members: MemberList | undefined = group
    ? {
        async list() {
          membership ??= import('../cluster/group.js').then(({ openMembership }) =>
            openMembership(
              group,
              backends.store,
              config.store.kind === 'postgres' ? config.store.url : undefined,
              log,
              config.node.startupTimeoutMs,
            ),
          );
          return (await membership).list(group.leaseMs * 3);
        },
      }
    : undefined;
  return new StoreAdmin({
    config,
    backends,
    log,
    group: memberGroupAccess(config, members, config.http.adminToken, log),
    async release() {
      if (membership) await (await membership).close().catch(() => undefined);
      await backends.close();
    },
  });
}
