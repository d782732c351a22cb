// The ping handler of ping.ts written with a payload schema: Baton reads each record as JSON and checks it
// with `payload` before anything is stored, so a bad ping is refused at ingest (HTTP 400 naming its line),
// and one pushed past that check goes straight to errors-ping, never retried. process() gets the ping
// parsed and typed. To use it: `handler = "./handlers/ping-typed.ts"` under [queues.ping] in baton.toml.
import { defineHandler } from 'baton-runtime';
import { z } from 'zod';

import { ping } from './ping.js';

export const { payload, schema, process } = defineHandler({
  payload: z.object({
    name: z.string().min(1),
    /** ISO 8601 with an offset, converted by PostgreSQL. */
    timestamp: z.iso.datetime({ offset: true }),
  }),
  schema: { ping },
  async process(tx, _record, ctx) {
    await tx.insert(ping).values(ctx.payload);
  },
});
