// The keys and idempotency ids of records, as callers give them (see docs/keys.md).
import { BadRequestError } from '../errors.js';

/** The longest key or idempotency id accepted, in bytes of UTF-8. */
export const MAX_KEY_BYTES = 512;

/**
 * A record's key or idempotency id as a caller gave it: a non-empty string of at most MAX_KEY_BYTES bytes
 * without control characters. BadRequestError naming `name` otherwise.
 */
export function checkKey(value: unknown, name: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new BadRequestError(`${name}: expected a non-empty string, got ${JSON.stringify(value)}`);
  }
  if (Buffer.byteLength(value) > MAX_KEY_BYTES) {
    throw new BadRequestError(
      `${name}: at most ${MAX_KEY_BYTES} bytes, got ${Buffer.byteLength(value)} (starting "${value.slice(0, 40)}")`,
    );
  }
  // eslint-disable-next-line no-control-regex -- control characters are what this refuses
  if (/[\u0000-\u001f\u007f]/.test(value)) {
    throw new BadRequestError(`${name}: control characters are not allowed (got ${JSON.stringify(value)})`);
  }
  return value;
}
