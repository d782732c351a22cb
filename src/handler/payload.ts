// Payload schemas: a handler module may export `payload`, a schema that its queue's records must match.
// Records are bytes; a queue with a payload schema reads each as UTF-8 JSON and checks it with the schema, so
// that a record that does not parse is refused at ingest and never given to the handler (docs/handlers.md).
// Any object with zod's safeParse() fits: a module built against another copy of zod works too.

/** What a payload schema is to Baton: zod's safeParse(), or one of the same shape. */
export interface PayloadSchema<T = unknown> {
  safeParse(value: unknown): PayloadSchemaResult<T>;
}

export type PayloadSchemaResult<T> =
  { readonly success: true; readonly data: T } | { readonly success: false; readonly error: unknown };

/** The value a payload schema gives for a record that matches it (`z.infer` for a zod schema). */
export type PayloadOf<S extends PayloadSchema> = Extract<
  ReturnType<S['safeParse']>,
  { success: true }
>['data'];

/** A record read as its queue's payload: the parsed value, or why it is not one. */
export type PayloadResult =
  { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly reason: string };

/** A record's payload parser: JSON read from the record's bytes, then checked by the schema. */
export type PayloadParser = (record: Buffer) => PayloadResult;

/** Schema issues named in a reason; more are counted. */
const ISSUES_NAMED = 3;
/** Characters of an issue's message, or of a JSON error, in a reason. */
const TEXT_KEPT = 120;

/**
 * The parser of a module's `payload` export. Never throws: a schema that throws (an async refinement given
 * to safeParse, say) refuses the record with what it threw.
 */
export function payloadParser(schema: PayloadSchema): PayloadParser {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  return (record) => {
    let text: string;
    try {
      text = decoder.decode(record);
    } catch {
      return { ok: false, reason: 'payload is not valid UTF-8 (a queue with a payload schema takes JSON)' };
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      return { ok: false, reason: `payload is not JSON: ${cut(messageOf(error))}` };
    }
    let result: unknown;
    try {
      result = schema.safeParse(value);
    } catch (error) {
      return { ok: false, reason: `the queue's payload schema failed: ${cut(messageOf(error))}` };
    }
    if (isObject(result) && result['success'] === true) return { ok: true, value: result['data'] };
    return { ok: false, reason: `payload does not match the queue's schema: ${describeIssues(result)}` };
  };
}

/** The first few issues of a failed safeParse, `path: message` each; its error's message if it has none. */
function describeIssues(result: unknown): string {
  const error = isObject(result) ? result['error'] : undefined;
  const issues = isObject(error) && Array.isArray(error['issues']) ? (error['issues'] as unknown[]) : [];
  if (issues.length === 0) return cut(error === undefined ? 'refused' : messageOf(error));
  const named = issues.slice(0, ISSUES_NAMED).map((issue) => {
    const fields = isObject(issue) ? issue : {};
    const message = cut(typeof fields['message'] === 'string' ? fields['message'] : 'invalid');
    const path = Array.isArray(fields['path']) ? pathText(fields['path']) : '';
    return path === '' ? message : `${path}: ${message}`;
  });
  const more = issues.length - named.length;
  return named.join('; ') + (more > 0 ? ` (and ${more} more)` : '');
}

/** `items[0].name`: numbers as indexes, other keys joined by dots. */
function pathText(path: readonly unknown[]): string {
  return path
    .map((key, index) => {
      if (typeof key === 'number') return `[${key}]`;
      const name = typeof key === 'string' ? key : typeof key === 'symbol' ? key.toString() : '?';
      return index === 0 ? name : `.${name}`;
    })
    .join('');
}

/** `text` cut to TEXT_KEPT characters, NUL escaped: messages may quote the record, and the error queue is text. */
function cut(text: string): string {
  const kept = text.length <= TEXT_KEPT ? text : `${text.slice(0, TEXT_KEPT)}…`;
  return kept.replaceAll('\u0000', '\\u0000');
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}
