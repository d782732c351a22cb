// The application starts its Baton node itself: the config of baton.toml (BATON_… variables override it), a
// route of its own beside Baton's API, and a line on each role change. SIGINT and SIGTERM stop the node:
// it finishes the batches in flight, and the process exits once it has stopped.
import { fileURLToPath } from 'node:url';

import { loadConfig, startNode } from 'baton-runtime';

const appDir = fileURLToPath(new URL('..', import.meta.url));
const config = await loadConfig({ cwd: appDir, env: process.env });

const node = await startNode(config, {
  routes: (app, node) => {
    // GET /orders/totals: how many orders are stored, and their sum.
    app.get('/orders/totals', async () => {
      const result = await node.admin.sql(
        'SELECT count(*)::int AS orders, coalesce(sum(total_cents), 0)::int AS total_cents FROM orders',
      );
      return result.rows[0] ?? {};
    });
  },
});

node.subscribe('node-role-changed', (change) => {
  console.log(`role: ${change.new} (was ${change.previous ?? 'none'})`);
});
console.log(`orders in at ${node.address ?? ''}/v1/queues/orders/records, totals at /orders/totals`);

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void node.stop());
}
