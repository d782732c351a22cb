// A listener in its own process, for the event tests: follows a node's event stream with NotificationClient
// and prints one JSON line per processed batch ({"offsets": [...]}), after an optional delay per batch.
// Settings come from the environment: BATON_URL, BATON_NAMESPACE, LISTEN_KEYS (comma-separated), LISTEN_NAME,
// LISTEN_FROM (an offset or "latest"), LISTEN_DELAY_MS.
import { NotificationClient } from '../../src/events/client.js';

const env = process.env;
const delayMs = Number(env['LISTEN_DELAY_MS'] ?? '0');
const from =
  env['LISTEN_FROM'] === undefined || env['LISTEN_FROM'] === 'latest' ? 'latest' : Number(env['LISTEN_FROM']);
const client = new NotificationClient(undefined, { retry: { initialMs: 20, maxMs: 500 } });
await client.registerListener(
  async (events) => {
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    process.stdout.write(`${JSON.stringify({ offsets: events.map((event) => event.offset) })}\n`);
  },
  (env['LISTEN_KEYS'] ?? '').split(',').filter(Boolean),
  { from, ...(env['LISTEN_NAME'] ? { name: env['LISTEN_NAME'] } : {}) },
);
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
process.once('SIGTERM', () => void client.close().then(() => process.exit(0)));
