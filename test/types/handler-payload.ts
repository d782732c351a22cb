// Checked by `npm run typecheck`, never run: defineHandler() types a handler's parsed payloads by its zod
// schema. Each `@ts-expect-error` fails the check if its line compiles.
import { z } from 'zod';

import { defineHandler } from '../../src/index.js';

const order = z.object({ id: z.string(), total_cents: z.number().int(), note: z.string().optional() });

export const { payload, process } = defineHandler({
  payload: order,
  process(_tx, _record, ctx) {
    const id: string = ctx.payload.id;
    const note: string | undefined = ctx.payload.note;
    // @ts-expect-error: "customer" is not in the schema
    const customer: unknown = ctx.payload.customer;
    return [id, note, customer];
  },
});

export const batch = defineHandler({
  payload: order.transform((value) => ({ ...value, total: value.total_cents / 100 })),
  processBatch(_tx, records, ctx) {
    // The schema's output type, transforms included.
    const totals: number[] = ctx.payloads.map((value) => value.total);
    // @ts-expect-error: a total is a number
    const wrong: string[] = ctx.payloads.map((value) => value.total);
    return [records.length, totals, wrong];
  },
});

export const notASchema = defineHandler({
  // @ts-expect-error: a payload schema has safeParse()
  payload: { parse: (value: unknown) => value },
  process: () => undefined,
});
