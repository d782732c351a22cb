// defineHandler(): a handler module written in TypeScript with a payload schema, its functions given the
// parsed payload with the schema's type. It returns the module's exports as they are, for
// `export const { payload, process } = defineHandler({ … })`.
import type { HandlerContext, HandlerModule } from './handler.js';
import type { PayloadOf, PayloadSchema } from './payload.js';
import type { Tx } from '../store/store.js';

/** The context of a handler with a payload schema: the parsed payload (or payloads), typed. */
type TypedContext<P> = Omit<HandlerContext, 'payload' | 'payloads'> & P;

/** A handler module with a payload schema `S`: its functions get the parsed payloads typed. */
export interface HandlerDefinition<S extends PayloadSchema> extends Omit<
  HandlerModule,
  'payload' | 'process' | 'processBatch'
> {
  readonly payload: S;
  readonly process?: (
    tx: Tx,
    record: Buffer,
    ctx: TypedContext<{ readonly payload: PayloadOf<S> }>,
  ) => unknown;
  readonly processBatch?: (
    tx: Tx,
    records: readonly Buffer[],
    ctx: TypedContext<{ readonly payloads: readonly PayloadOf<S>[] }>,
  ) => unknown;
}

/** Returns `definition` as it is: it types `ctx.payload` (and `ctx.payloads`) by the schema. */
export function defineHandler<S extends PayloadSchema>(
  definition: HandlerDefinition<S>,
): HandlerDefinition<S> {
  return definition;
}
