// The queue backend contract against the store-backed queue on the embedded store (PGlite).
import { StoreQueueBackend } from '../../src/queue/store-queue.js';
import { describeQueueBackend } from '../contract/queue-backend.contract.js';
import { openTempStore } from '../support/pglite.js';

describeQueueBackend('store queue on PGlite', async () => {
  const temp = await openTempStore();
  const backend = new StoreQueueBackend(temp.store);
  return {
    backend,
    store: temp.store,
    async dispose() {
      await backend.close();
      await temp.dispose();
    },
  };
});
