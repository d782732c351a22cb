// Readers of Redis replies. Scripts are run with callBuffer, so their strings arrive as bytes; these read
// them as what each script says it returns, and throw TypeError on a reply of another shape.

export function asArray(reply: unknown): unknown[] {
  if (reply === null || reply === undefined) return [];
  if (!Array.isArray(reply)) throw new TypeError(`unexpected Redis reply: ${typeof reply}`);
  return reply;
}

export function asBuffer(reply: unknown): Buffer {
  if (Buffer.isBuffer(reply)) return reply;
  if (typeof reply === 'string') return Buffer.from(reply);
  throw new TypeError(`unexpected Redis reply: ${typeof reply}, expected bytes`);
}

export function asText(reply: unknown): string {
  return Buffer.isBuffer(reply) || typeof reply === 'string' ? reply.toString() : '';
}

export function asInteger(reply: unknown): number {
  const value = Buffer.isBuffer(reply) ? Number(reply.toString('latin1')) : Number(reply);
  if (!Number.isInteger(value))
    throw new TypeError(`unexpected Redis reply: ${String(reply)}, expected an integer`);
  return value;
}
