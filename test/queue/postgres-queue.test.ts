// The queue backend contract against a PostgreSQL queue in another database than the sink: two throwaway
// databases, the queue's records in one (the adapter applies Baton's migrations there itself) and the
// handlers' writes and the batch ledger in the other.
import { createLogger } from '../../src/log.js';
import { PostgresQueueBackend } from '../../src/queue/postgres-queue.js';
import { applyMigrations, builtinMigrations } from '../../src/store/migrate.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import { describeQueueBackend } from '../contract/queue-backend.contract.js';
import { createTestDatabase } from '../support/postgres.js';

describeQueueBackend('postgres queue in another database', async () => {
  const [sink, queueDatabase] = await Promise.all([createTestDatabase(), createTestDatabase()]);
  const log = createLogger({ level: 'silent' });
  const store = await openPostgresStore(
    { kind: 'postgres', url: sink.url, poolSize: 8, statementTimeoutMs: 0 },
    { log, startupTimeoutMs: 5000 },
  );
  await applyMigrations(store, await builtinMigrations());
  const backend = new PostgresQueueBackend({ url: queueDatabase.url, store, log, poolSize: 8 });
  await backend.start({ startupTimeoutMs: 5000 });
  return {
    backend,
    store,
    async dispose() {
      await backend.close();
      await store.close();
      await Promise.all([sink.drop(), queueDatabase.drop()]);
    },
  };
});
