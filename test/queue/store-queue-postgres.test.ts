// The queue backend contract against the store-backed queue on a PostgreSQL server.
import { StoreQueueBackend } from '../../src/queue/store-queue.js';
import { createLogger } from '../../src/log.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import { describeQueueBackend } from '../contract/queue-backend.contract.js';
import { createTestDatabase } from '../support/postgres.js';

describeQueueBackend('store queue on PostgreSQL', async () => {
  const database = await createTestDatabase();
  const log = createLogger({ level: 'silent' });
  const store = await openPostgresStore(
    { kind: 'postgres', url: database.url, poolSize: 8, statementTimeoutMs: 0 },
    { log, startupTimeoutMs: 5000 },
  );
  await applyMigrations(store, await builtinMigrations());
  const backend = new StoreQueueBackend(store, log);
  await backend.start();
  return {
    backend,
    store,
    async dispose() {
      await backend.close();
      await store.close();
      await database.drop();
    },
  };
});
