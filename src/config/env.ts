// Environment overrides: `BATON_` + the key path joined by `__` sets that key, e.g.
// `BATON_QUEUES__PING__BATCH_SIZE=1000`. The environment is passed in by the caller so that tests and
// in-code nodes never depend on the process's globals.

import { parse, TomlError } from 'smol-toml';

import { ConfigError } from '../errors.js';

export type Env = Readonly<Record<string, string | undefined>>;

export type RawTable = Record<string, unknown>;

export const ENV_PREFIX = 'BATON_';

const SEPARATOR = '__';

export function isTable(value: unknown): value is RawTable {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

export interface EnvOverrides {
  /** A copy of the input table with the overrides applied. */
  raw: RawTable;
  /** Dotted key path → name of the variable that set it, for error messages. */
  origins: ReadonlyMap<string, string>;
}

/**
 * Applies every `BATON_A__B…` variable to a copy of `raw`. Path segments match existing keys without regard
 * to case; a segment naming no existing key is lowercased, and creates a table when more segments follow.
 * Variables with a single segment (such as `BATON_CONFIG`) are not config keys and are left alone, as are
 * empty values (an unset variable in many shells and compose files).
 */
export function applyEnvOverrides(raw: RawTable, env: Env): EnvOverrides {
  const result = cloneTables(raw);
  const origins = new Map<string, string>();
  // Sorted so that the outcome does not depend on the order the environment happened to be listed in.
  const names = Object.keys(env)
    .filter((name) => name.startsWith(ENV_PREFIX))
    .sort();

  for (const name of names) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    const segments = name.slice(ENV_PREFIX.length).split(SEPARATOR);
    if (segments.length < 2) continue;
    if (segments.some((segment) => segment === '')) {
      throw new ConfigError(`environment variable ${name} has an empty key segment`);
    }
    setPath(result, segments, parseEnvValue(value), name, origins);
  }
  return { raw: result, origins };
}

function setPath(
  root: RawTable,
  segments: readonly string[],
  value: unknown,
  variable: string,
  origins: Map<string, string>,
): void {
  let current = root;
  const path: string[] = [];
  for (const [index, segment] of segments.entries()) {
    const key = matchKey(current, segment);
    path.push(key);
    const dotted = path.join('.');
    if (index === segments.length - 1) {
      setOwn(current, key, value);
      origins.set(dotted, variable);
      return;
    }
    const next = Object.hasOwn(current, key) ? current[key] : undefined;
    if (next === undefined) {
      const created: RawTable = {};
      setOwn(current, key, created);
      current = created;
    } else if (isTable(next)) {
      current = next;
    } else {
      throw new ConfigError(`${variable} sets a key inside "${dotted}", which is not a table`, {
        key: dotted,
      });
    }
  }
}

/** Copies nested tables (not leaves), so overrides never write into the caller's objects. */
export function cloneTables(table: RawTable): RawTable {
  const copy: RawTable = {};
  for (const [key, value] of Object.entries(table))
    setOwn(copy, key, isTable(value) ? cloneTables(value) : value);
  return copy;
}

/** Sets an own property even for a key such as `__proto__`, which plain assignment would treat specially. */
export function setOwn(table: RawTable, key: string, value: unknown): void {
  Object.defineProperty(table, key, { value, enumerable: true, writable: true, configurable: true });
}

function matchKey(table: RawTable, segment: string): string {
  const wanted = segment.toLowerCase();
  return Object.keys(table).find((key) => key.toLowerCase() === wanted) ?? wanted;
}

/**
 * Reads a variable's value as a TOML value (`1000`, `true`, `"text"`, `["a", "b"]`, `{ token = "…" }`) when it
 * is one, otherwise as a plain string. Dates stay strings: no option takes a date.
 */
export function parseEnvValue(text: string): unknown {
  let document: RawTable;
  try {
    document = parse(`value = ${text}`);
  } catch (error) {
    if (error instanceof TomlError) return text;
    throw error;
  }
  // A value with a newline could smuggle in more keys; then it is not a single TOML value.
  const keys = Object.keys(document);
  if (keys.length !== 1 || keys[0] !== 'value') return text;
  const value = document['value'];
  return value instanceof Date ? text : value;
}
