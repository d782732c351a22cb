// Builds the elector a [group] names. The config has resolved its coordination backend (group.url), so each
// elector gets what it needs as it is; the fence in the store keeps new terms of the redis and standalone
// electors above any term the group has used.
import type { GroupConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import { PgRecoveryElector } from './electors/pg-recovery.js';
import { PostgresElector } from './electors/postgres.js';
import { RedisElector } from './electors/redis.js';
import { StandaloneElector } from './electors/standalone.js';
import { currentFence } from './fence.js';
import type { Elector, ElectorOptions } from './types.js';

export function makeElector(config: GroupConfig, node: string, store: Store, log: Logger): Elector {
  if (config.elector === 'standalone') {
    return new StandaloneElector({ node, currentTerm: () => currentFence(store, config.name) });
  }
  const options: ElectorOptions & { url: string; log: Logger } = {
    node,
    group: config.name,
    leaseMs: config.leaseMs,
    renewDeadlineMs: config.renewDeadlineMs,
    heartbeatMs: config.heartbeatMs,
    url: config.url,
    log,
  };
  switch (config.elector) {
    case 'postgres':
      // Baton's tables in the elector's database live in the schema of its tables in the store.
      return new PostgresElector({ ...options, schema: store.schema });
    case 'redis':
      // New terms stay above the fence even if Redis lost its counter.
      return new RedisElector({ ...options, currentTerm: () => currentFence(store, config.name) });
    case 'pg-recovery':
      return new PgRecoveryElector({
        ...options,
        schema: store.schema,
        ...(config.watchPath ? { watchPath: config.watchPath } : {}),
        failoverFiles: config.failoverFiles,
      });
  }
}
