// SQL results on the wire (POST /v1/sql, the CLI's --json): rows as JSON objects, bytes as PostgreSQL hex
// text, big integers as strings and times as ISO text; read back on the client's side as plain rows.
import { z } from 'zod';

import type { QueryResult } from './store.js';

export function queryResultJson(result: QueryResult): Record<string, unknown> {
  return { columns: result.columns, rows: result.rows.map(rowJson) };
}

/** A row of a SQL result. */
export function rowJson(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(row)) out[key] = valueJson(value);
  return out;
}

function valueJson(value: unknown): unknown {
  if (value instanceof Uint8Array) {
    return `\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`;
  }
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(valueJson);
  return value;
}

export const queryResultReply = z.object({
  columns: z.array(z.string()),
  rows: z.array(z.record(z.string(), z.unknown())),
});
