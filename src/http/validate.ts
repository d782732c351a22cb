// Request input, checked before it reaches a backend: zod schemas (a failure is a 400 that names the field),
// decimal numbers of paths and queries within the range their column holds, and JSON bodies that must be
// valid UTF-8 (a replacement character would be stored in place of what the client sent).
import { isUtf8 } from 'node:buffer';

import { z } from 'zod';

import { BadRequestError } from '../errors.js';

export function parseInput<T extends z.ZodType>(schema: T, input: unknown, where: string): z.infer<T> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = issue && issue.path.length > 0 ? `${where}.${issue.path.join('.')}` : where;
  throw new BadRequestError(`invalid ${path}: ${issue?.message ?? 'malformed'}`);
}

/** The largest PostgreSQL bigint: error record ids (bigserial, or a Redis counter) are at most this. */
const BIGINT_MAX = 9_223_372_036_854_775_807n;

/**
 * A decimal integer of a path, a query or a header (an offset, a limit): digits only (no sign, exponent,
 * hex or spaces), within [min, max]; max is at most Number.MAX_SAFE_INTEGER. Undefined otherwise.
 */
export function decimalInteger(text: string, min: number, max: number): number | undefined {
  if (!/^\d{1,16}$/.test(text)) return undefined;
  const value = Number(text);
  return value >= min && value <= max ? value : undefined;
}

/** A zod schema for a decimal integer of a path or query: its message says what is expected. */
export function integerText(what: string, min: number, max: number = Number.MAX_SAFE_INTEGER) {
  const expected = `expected ${what} (an integer from ${min} to ${max})`;
  return z.string({ error: expected }).transform((text, context) => {
    const value = decimalInteger(text, min, max);
    if (value === undefined) context.addIssue({ code: 'custom', message: expected });
    return value ?? z.NEVER;
  });
}

/** A zod schema for an error record id (a bigint, kept as text): digits only, 0 to the bigint maximum. */
export const recordIdText = z
  .string({ error: `expected an error record id (an integer from 0 to ${BIGINT_MAX})` })
  .refine((text) => /^\d{1,19}$/.test(text) && BigInt(text) <= BIGINT_MAX, {
    error: `expected an error record id (an integer from 0 to ${BIGINT_MAX})`,
  })
  .transform((text) => BigInt(text).toString());

/**
 * The offset of the first byte of `bytes` that is not valid UTF-8 (the start of the bad sequence:
 * a stray continuation byte, a truncated, overlong or surrogate sequence, or one past U+10FFFF), or
 * undefined when all of it is valid.
 */
export function invalidUtf8Offset(bytes: Uint8Array): number | undefined {
  if (isUtf8(bytes)) return undefined;
  let at = 0;
  while (at < bytes.length) {
    const lead = bytes[at] ?? 0;
    if (lead < 0x80) {
      at += 1;
      continue;
    }
    const sequence = utf8Sequence(lead);
    if (sequence === undefined) return at;
    let { lower, upper } = sequence;
    for (let next = 1; next <= sequence.continuation; next++) {
      const byte = bytes[at + next];
      if (byte === undefined || byte < lower || byte > upper) return at;
      lower = 0x80;
      upper = 0xbf;
    }
    at += sequence.continuation + 1;
  }
  return undefined;
}

/** How many continuation bytes follow `lead`, and the range of the first one (RFC 3629, table 3-7). */
function utf8Sequence(lead: number): { continuation: number; lower: number; upper: number } | undefined {
  if (lead >= 0xc2 && lead <= 0xdf) return { continuation: 1, lower: 0x80, upper: 0xbf };
  if (lead >= 0xe0 && lead <= 0xef) {
    return { continuation: 2, lower: lead === 0xe0 ? 0xa0 : 0x80, upper: lead === 0xed ? 0x9f : 0xbf };
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    return { continuation: 3, lower: lead === 0xf0 ? 0x90 : 0x80, upper: lead === 0xf4 ? 0x8f : 0xbf };
  }
  return undefined;
}

/** Refuses a body that is not valid UTF-8, naming the byte offset and the bytes found there. */
export function checkUtf8Body(bytes: Buffer): void {
  const offset = invalidUtf8Offset(bytes);
  if (offset === undefined) return;
  const found = [...bytes.subarray(offset, offset + 4)]
    .map((byte) => `0x${byte.toString(16).toUpperCase().padStart(2, '0')}`)
    .join(' ');
  throw new BadRequestError(
    `body: invalid UTF-8 at byte offset ${offset} (bytes ${found}): JSON bodies must be UTF-8 encoded`,
  );
}
