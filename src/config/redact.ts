// A view of the resolved config that is safe to print (`baton print-config`) or log: secrets become "***".
// Secrets are found by key name and inside URLs rather than by a fixed list of paths, so that sections added
// later (a group url, a Redis password) are covered without touching this file.

import type { ConfigInput } from './schema.js';
import type { ResolvedConfig } from './types.js';

export const REDACTED = '***';

/** Keys whose string values are secrets wherever they appear. */
const SECRET_KEY = /^(?:token|password|secret|passphrase)$|(?:Token|Password|Secret)$/;

/** `scheme://user:password@` → the password part. Greedy up to the last "@" of the authority. */
const URL_PASSWORD = /\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*):[^\s/]*@/gi;

/** `?password=…`, `&token=…` and the like in connection strings. */
const QUERY_SECRET = /([?&](?:password|pass|pwd|token|secret|sslpassword)=)[^&#\s]*/gi;

/**
 * A JSON-able copy of `config` (resolved, or in the input shape) with secrets replaced by "***": `http.token`,
 * every `http.tokens[].token`, and passwords inside URLs. `undefined` becomes `null`, so that unset options
 * still show up in the output.
 */
export function redactConfig(config: ResolvedConfig | ConfigInput): unknown {
  return redactValue(config, undefined);
}

function redactValue(value: unknown, key: string | undefined): unknown {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') {
    return key !== undefined && SECRET_KEY.test(key) ? REDACTED : redactUrl(value);
  }
  if (Array.isArray(value)) return value.map((item: unknown) => redactValue(item, undefined));
  if (typeof value === 'object') {
    const copy: Record<string, unknown> = {};
    for (const [entryKey, entry] of Object.entries(value)) copy[entryKey] = redactValue(entry, entryKey);
    return copy;
  }
  return value;
}

/** Hides the password of every URL in `text`, keeping the rest so the target stays recognisable. */
export function redactUrl(text: string): string {
  return text.replace(URL_PASSWORD, `$1:${REDACTED}@`).replace(QUERY_SECRET, `$1${REDACTED}`);
}
