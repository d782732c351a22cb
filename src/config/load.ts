// Builds the configuration a node runs with: read the TOML file, apply env overrides then flags, validate
// against the schema (defaults fill the gaps), and resolve what depends on where the file is. Every failure
// is a ConfigError naming the file and the dotted key, which the CLI turns into exit code 2.

import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { Cron } from 'croner';
import { parse, TomlError } from 'smol-toml';
import type { z } from 'zod';

import { ConfigError } from '../errors.js';
import { optionalFile, resolveHandler } from './where.js';
import { resolveWorkflows } from './workflows.js';
import { applyEnvOverrides, cloneTables, isTable, setOwn, type Env, type RawTable } from './env.js';
import {
  describeValue,
  rawConfigSchema,
  TOKEN_SCOPES,
  type ParsedConfig,
  type RawOverrides,
} from './schema.js';
import type {
  ComponentConfig,
  CoordinatedGroupConfig,
  GroupConfig,
  HttpTokenConfig,
  QueueConfig,
  ResolvedConfig,
  RuleConfig,
  ScheduleAction,
  ScheduleConfig,
  ScheduleTiming,
  TaskConfig,
  TokenScope,
} from './types.js';

/** The file read when none is named, looked up in the working directory. */
export const DEFAULT_CONFIG_FILE = 'baton.toml';

export interface LoadConfigOptions {
  /** Config file, relative to `cwd`. When absent, `<cwd>/baton.toml` is read if it exists. */
  file?: string | undefined;
  cwd: string;
  env: Env;
  /** Command-line flags in the raw snake_case shape; they win over the file and the environment. */
  overrides?: RawOverrides | undefined;
}

export interface ResolveConfigOptions {
  /** The file `raw` came from, for messages and `ResolvedConfig.file`. */
  file?: string | undefined;
  /** Folder that relative paths (data_dir, store.path, handlers) are resolved against. */
  baseDir: string;
  env: Env;
  overrides?: RawOverrides | undefined;
}

export async function loadConfig(options: LoadConfigOptions): Promise<ResolvedConfig> {
  const file = path.resolve(options.cwd, options.file ?? DEFAULT_CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const resolveOptions = { env: options.env, overrides: options.overrides };
    if (isNotFound(error) && options.file === undefined) {
      return resolveConfig({}, { ...resolveOptions, baseDir: path.resolve(options.cwd) });
    }
    const reason = isNotFound(error)
      ? 'config file not found'
      : `cannot read the config file: ${String(error)}`;
    throw new ConfigError(reason, { file, cause: error });
  }
  return resolveConfig(parseToml(text, file), {
    file,
    baseDir: path.dirname(file),
    env: options.env,
    overrides: options.overrides,
  });
}

/**
 * For in-code use (`startNode` with a config object): the same pipeline as `loadConfig`, without the file.
 * `raw` is validated as a file's content is, so it may come from anywhere (JSON, another format); a config
 * written in code gets its type from `defineConfig` (`ConfigInput`).
 */
export function resolveConfig(raw: unknown, options: ResolveConfigOptions): ResolvedConfig {
  const file = options.file === undefined ? undefined : path.resolve(options.baseDir, options.file);
  if (!isTable(raw)) {
    throw new ConfigError(`expected a table of options, got ${describeValue(raw)}`, optionalFile(file));
  }
  const fromEnv = applyEnvOverrides(raw, options.env);
  const merged = options.overrides === undefined ? fromEnv.raw : mergeTables(fromEnv.raw, options.overrides);
  const result = rawConfigSchema.safeParse(merged);
  if (!result.success) {
    // A flag that replaced an env value must not be blamed on the variable: it is recorded as no origin.
    const origins = new Map<string, string | undefined>(fromEnv.origins);
    for (const flag of leafPaths(options.overrides ?? {})) origins.set(flag, undefined);
    throw issuesToError(result.error.issues, file, origins);
  }
  return resolveParsed(result.data, file, path.resolve(options.baseDir));
}

function parseToml(text: string, file: string): RawTable {
  try {
    // Keys such as `__proto__` are refused rather than kept, since the result is merged into plain objects.
    return parse(text, { unsafeKeyBehaviour: 'throw' });
  } catch (error) {
    if (!(error instanceof TomlError)) throw error;
    const reason = (error.message.split('\n')[0] ?? '').replace(/^Invalid TOML document:\s*/, '');
    const excerpt = error.codeblock.trimEnd();
    throw new ConfigError(
      `invalid TOML at line ${error.line}, column ${error.column}: ${reason}${excerpt ? `\n${excerpt}` : ''}`,
      { file, cause: error },
    );
  }
}

function resolveParsed(parsed: ParsedConfig, file: string | undefined, baseDir: string): ResolvedConfig {
  const { http } = parsed;
  if (http.enabled && http.token === undefined && http.tokens.length === 0 && !isLoopbackHost(http.host)) {
    throw new ConfigError(
      `required when http.host (${JSON.stringify(http.host)}) is not a loopback address: ` +
        'set http.token or add [[http.tokens]]',
      { key: 'http.token', ...optionalFile(file) },
    );
  }
  const tokens = resolveTokens(http, file);

  const dataDir = path.resolve(baseDir, parsed.node.data_dir);
  const queues: Record<string, QueueConfig> = {};
  for (const [name, queue] of Object.entries(parsed.queues)) {
    const handler = resolveHandler(queue.handler, baseDir);
    queues[name] = {
      name,
      handler,
      backend: queue.backend,
      url: queue.url,
      key: queue.key ?? name,
      migrations: resolveMigrations(queue.migrations, handler, name, baseDir),
      batchSize: queue.batch_size,
      // One batch at a time leaves a node idle on round trips to a shared backend; PGlite runs one anyway.
      concurrency: queue.concurrency ?? (queue.backend !== 'store' || parsed.store.url !== undefined ? 4 : 1),
      maxAttempts: queue.max_attempts,
      timeoutMs: queue.timeout_ms,
      retryDelayMs: queue.retry_delay_ms,
      retryMaxDelayMs: queue.retry_max_delay_ms,
      inline: queue.inline,
      runOn: queue.run_on,
      ordering: queue.ordering,
      dedupWindowMs: queue.dedup_window_ms,
      rateLimit: queue.rate_limit,
      keyConcurrency: queue.key_concurrency ?? 1,
      keyRateLimit: queue.key_rate_limit,
    };
  }
  const components: Record<string, ComponentConfig> = {};
  for (const [name, component] of Object.entries(parsed.components)) {
    components[name] = {
      name,
      module: resolveHandler(component.module, baseDir),
      channels: component.channels,
    };
  }

  const tasks: Record<string, TaskConfig> = {};
  for (const [name, task] of Object.entries(parsed.tasks)) {
    tasks[name] = {
      name,
      command: task.command,
      module: task.module === undefined ? undefined : resolveHandler(task.module, baseDir),
      cwd: baseDir,
      namespace: task.namespace,
      timeoutMs: task.timeout_ms,
    };
  }
  if (Object.keys(tasks).length > 0 && !parsed.events.enabled) {
    throw new ConfigError('tasks and rules need the event log: set it to true or remove the [tasks] tables', {
      key: 'events.enabled',
      ...optionalFile(file),
    });
  }
  const rules = parsed.rules.map((rule, index): RuleConfig => {
    if (!Object.hasOwn(tasks, rule.task)) {
      const known = Object.keys(tasks);
      throw new ConfigError(
        `unknown task ${JSON.stringify(rule.task)}: ` +
          (known.length === 0 ? 'no [tasks.<name>] table is defined' : `expected one of ${known.join(', ')}`),
        { key: `rules[${index}].task`, ...optionalFile(file) },
      );
    }
    return {
      index,
      on: { namespace: rule.on.namespace, key: rule.on.key, value: rule.on.value },
      action: rule.action,
      task: rule.task,
      onLost: rule.on_lost,
    };
  });

  const schedules = resolveSchedules(parsed, queues, tasks, file);
  const workflows = resolveWorkflows(parsed, baseDir, file, schedules);

  return {
    file,
    baseDir,
    node: {
      name: parsed.node.name ?? os.hostname(),
      dataDir,
      shutdownTimeoutMs: parsed.node.shutdown_timeout_ms,
      startupTimeoutMs: parsed.node.startup_timeout_ms,
    },
    log: { level: parsed.log.level, format: parsed.log.format },
    http: {
      enabled: http.enabled,
      host: http.host,
      port: http.port,
      token: http.token,
      tokens,
      adminToken: http.token ?? tokens.find((entry) => entry.scopes.includes('admin'))?.token,
      bodyLimitBytes: http.body_limit_bytes,
      hosts: resolveHosts(http.hosts, http.host),
      requestTimeoutMs: http.request_timeout_ms,
      trustProxy: http.trust_proxy,
    },
    store: parsed.store.url
      ? {
          kind: 'postgres',
          url: parsed.store.url,
          schema: parsed.store.schema,
          poolSize: parsed.store.pool_size,
          statementTimeoutMs: parsed.store.statement_timeout_ms,
          queryTimeoutMs:
            parsed.store.query_timeout_ms === 0
              ? 0
              : Math.max(
                  parsed.store.query_timeout_ms,
                  parsed.store.statement_timeout_ms > 0 ? parsed.store.statement_timeout_ms + 5_000 : 0,
                ),
        }
      : {
          kind: 'embedded',
          schema: parsed.store.schema,
          path:
            parsed.store.path === '' ? path.join(dataDir, 'store') : path.resolve(baseDir, parsed.store.path),
        },
    redis: { url: parsed.redis.url },
    queues,
    group: resolveGroup(parsed, baseDir, file),
    components,
    events: {
      enabled: parsed.events.enabled,
      retentionMs: parsed.events.retention_days * 86_400_000,
      maxBatch: parsed.events.max_batch,
      maxStreamsPerClient: parsed.events.max_streams_per_client,
    },
    tasks,
    rules,
    schedules,
    workflows,
  };
}

/** [schedules.<name>]: the timing checked (cron by croner, the time zone by Intl), the action's target known. */
function resolveSchedules(
  parsed: ParsedConfig,
  queues: Readonly<Record<string, QueueConfig>>,
  tasks: Readonly<Record<string, TaskConfig>>,
  file: string | undefined,
): Record<string, ScheduleConfig> {
  const schedules: Record<string, ScheduleConfig> = {};
  for (const [name, schedule] of Object.entries(parsed.schedules)) {
    const fail = (key: string, message: string): ConfigError =>
      new ConfigError(message, { key: `schedules.${name}.${key}`, ...optionalFile(file) });
    if (!parsed.events.enabled) {
      throw new ConfigError('schedules need the event log (each tick is an event): set it to true', {
        key: 'events.enabled',
        ...optionalFile(file),
      });
    }
    if (!isTimeZone(schedule.timezone)) {
      throw fail(
        'timezone',
        `unknown time zone ${describeValue(schedule.timezone)}: expected an IANA name such as "Europe/Paris"`,
      );
    }
    let timing: ScheduleTiming;
    if (schedule.cron !== undefined) {
      const problem = cronProblem(schedule.cron, schedule.timezone);
      if (problem !== undefined)
        throw fail('cron', `invalid cron expression ${describeValue(schedule.cron)}: ${problem}`);
      timing = { kind: 'cron', cron: schedule.cron, timezone: schedule.timezone };
    } else {
      const everyMs = parseDurationMs(schedule.every ?? '');
      if (everyMs === undefined || everyMs < 1) {
        throw fail(
          'every',
          `expected a duration such as "500ms", "30s", "5m", "1h30m" or "1d", got ${describeValue(schedule.every)}`,
        );
      }
      timing = { kind: 'every', everyMs, timezone: schedule.timezone };
    }
    let action: ScheduleAction;
    if (schedule.publish !== undefined) {
      const queue = queues[schedule.publish.queue];
      if (!queue)
        throw fail('publish.queue', unknownName('queue', schedule.publish.queue, Object.keys(queues)));
      if (queue.backend === 'postgres') {
        // Its record could neither commit in the tick's transaction nor be pushed once by a keyed script.
        throw fail(
          'publish.queue',
          `queue ${JSON.stringify(queue.name)} has backend = "postgres" (another database than the store): ` +
            'a schedule publishes to queues with backend = "store" or "redis" only',
        );
      }
      action = {
        kind: 'publish',
        queue: queue.name,
        payload: schedule.publish.payload,
        backend: queue.backend,
        key: queue.key,
      };
    } else if (schedule.event !== undefined) {
      action = {
        kind: 'event',
        namespace: schedule.event.namespace,
        key: schedule.event.key,
        value: schedule.event.value,
      };
    } else {
      const task = schedule.task ?? '';
      if (!Object.hasOwn(tasks, task)) throw fail('task', unknownName('task', task, Object.keys(tasks)));
      action = { kind: 'task', task };
    }
    schedules[name] = {
      name,
      timing,
      missed: schedule.missed,
      missedLimit: schedule.missed_limit,
      jitterMs: schedule.jitter_ms,
      namespace: schedule.namespace,
      action,
    };
  }
  return schedules;
}

function unknownName(what: 'queue' | 'task', name: string, known: readonly string[]): string {
  return (
    `unknown ${what} ${JSON.stringify(name)}: ` +
    (known.length === 0 ? `no [${what}s.<name>] table is defined` : `expected one of ${known.join(', ')}`)
  );
}

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** "500ms", "30s", "5m", "1h30m", "1d" → milliseconds; undefined when it is not such a duration. */
export function parseDurationMs(text: string): number | undefined {
  const trimmed = text.trim();
  if (!/^(\d+(ms|s|m|h|d))+$/.test(trimmed)) return undefined;
  let total = 0;
  for (const [, amount, unit] of trimmed.matchAll(/(\d+)(ms|s|m|h|d)/g)) {
    total += Number(amount) * (DURATION_UNITS[unit ?? ''] ?? Number.NaN);
  }
  return Number.isSafeInteger(total) ? total : undefined;
}

function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** Why croner refuses `expression` (or it is not of 5 or 6 fields); undefined when it is a usable one. */
function cronProblem(expression: string, timezone: string): string | undefined {
  const fields = expression.trim().split(/\s+/);
  if (!expression.trim().startsWith('@') && fields.length !== 5 && fields.length !== 6) {
    return `expected 5 fields (minute hour day month weekday) or 6 (second first), got ${fields.length}`;
  }
  try {
    const next = new Cron(expression, { timezone, paused: true }).nextRun();
    return next === null ? 'it never fires' : undefined;
  } catch (error) {
    return error instanceof Error ? error.message.replace(/^CronPattern: /, '') : String(error);
  }
}

/** [group] with its derived defaults, checked against the store and the timings' order. */
function resolveGroup(
  parsed: ParsedConfig,
  baseDir: string,
  file: string | undefined,
): GroupConfig | undefined {
  const group = parsed.group;
  if (!group) return undefined;
  const fail = (key: string, message: string): never => {
    throw new ConfigError(message, { key: `group.${key}`, ...optionalFile(file) });
  };
  const renewDeadlineMs = group.renew_deadline_ms ?? Math.round(group.lease_ms * 0.6);
  if (renewDeadlineMs >= group.lease_ms) {
    fail('renew_deadline_ms', `expected below lease_ms (${group.lease_ms}), got ${renewDeadlineMs}`);
  }
  if (group.heartbeat_ms >= renewDeadlineMs) {
    fail('heartbeat_ms', `expected below renew_deadline_ms (${renewDeadlineMs}), got ${group.heartbeat_ms}`);
  }
  const grace = group.lease_ms - renewDeadlineMs;
  const stopTimeoutMs = group.stop_timeout_ms ?? grace;
  if (stopTimeoutMs > grace) {
    fail(
      'stop_timeout_ms',
      `expected at most lease_ms - renew_deadline_ms (${grace}), so that primary-only work stops before another node may take over; got ${stopTimeoutMs}`,
    );
  }
  const timings = {
    name: group.name,
    leaseMs: group.lease_ms,
    renewDeadlineMs,
    heartbeatMs: group.heartbeat_ms,
    stopTimeoutMs,
    watchPath: group.watch_path === undefined ? undefined : path.resolve(baseDir, group.watch_path),
    failoverFiles: group.failover_files,
  };
  if (group.elector === 'standalone') {
    if (group.url !== undefined) {
      fail(
        'url',
        'the standalone elector has no coordination backend: remove group.url or pick another elector',
      );
    }
    return { ...timings, elector: 'standalone', url: undefined };
  }
  return { ...timings, elector: group.elector, url: groupUrl(group.elector, group.url, parsed, fail) };
}

/**
 * The coordination backend of an elector: group.url when set, else the store's URL (postgres, pg-recovery: a
 * PostgreSQL server is needed) or [redis] url (redis).
 */
function groupUrl(
  elector: CoordinatedGroupConfig['elector'],
  configured: string | undefined,
  parsed: ParsedConfig,
  fail: (key: string, message: string) => never,
): string {
  if (elector === 'redis') {
    if (configured !== undefined && !/^rediss?:\/\//.test(configured)) {
      fail('url', 'expected a redis:// URL for the redis elector');
    }
    return configured ?? parsed.redis.url;
  }
  if (configured !== undefined && !/^postgres(?:ql)?:\/\//.test(configured)) {
    fail('url', `expected a postgres:// URL for the ${elector} elector`);
  }
  const url = configured ?? parsed.store.url;
  if (url === undefined) {
    return fail(
      'url',
      `the ${elector} elector needs a PostgreSQL server, and the store is embedded: set group.url or [store] url`,
    );
  }
  return url;
}

/** The queue's migrations folder: as configured, else beside a local handler; none for a package handler. */
function resolveMigrations(
  configured: string | undefined,
  handler: string,
  queue: string,
  baseDir: string,
): string | undefined {
  if (configured !== undefined) return path.resolve(baseDir, configured);
  return path.isAbsolute(handler) ? path.join(path.dirname(handler), 'migrations', queue) : undefined;
}

/** Tokens accepted off loopback are at least this long: short ones are guessed. */
const REMOTE_TOKEN_MIN_LENGTH = 16;
/** The scopes of a limited `[[http.tokens]]` entry that names none. */
const LIMITED_SCOPES: readonly TokenScope[] = ['read', 'write'];

/**
 * The `[[http.tokens]]` entries with their defaults: an entry limited by neither `namespaces` nor `queues`
 * has every scope unless it names some; a limited one has `read` and `write`, and the list it leaves out is
 * empty (it reaches only what it names). Refuses `admin` on a limited entry (sql reads everything), a token
 * given twice, and, off loopback, a token shorter than REMOTE_TOKEN_MIN_LENGTH.
 */
function resolveTokens(http: ParsedConfig['http'], file: string | undefined): HttpTokenConfig[] {
  const remote = http.enabled && !isLoopbackHost(http.host);
  const seen = new Map<string, string>();
  const check = (token: string, key: string): void => {
    if (remote && token.length < REMOTE_TOKEN_MIN_LENGTH) {
      throw new ConfigError(
        `expected a token of at least ${REMOTE_TOKEN_MIN_LENGTH} characters when http.host ` +
          `(${JSON.stringify(http.host)}) is not a loopback address, got ${token.length}`,
        { key, ...optionalFile(file) },
      );
    }
    const earlier = seen.get(token);
    if (earlier !== undefined) {
      throw new ConfigError(`the same token as ${earlier}: each token is given once, with its scopes`, {
        key,
        ...optionalFile(file),
      });
    }
    seen.set(token, key);
  };
  if (http.token !== undefined) check(http.token, 'http.token');
  return http.tokens.map((entry, index) => {
    const key = `http.tokens[${index}]`;
    check(entry.token, `${key}.token`);
    const limited = entry.namespaces !== undefined || entry.queues !== undefined;
    const scopes = [...new Set<TokenScope>(entry.scopes ?? (limited ? LIMITED_SCOPES : TOKEN_SCOPES))];
    if (limited && scopes.includes('admin')) {
      throw new ConfigError(
        'the admin scope cannot be limited to namespaces or queues (sql reads and writes everything): ' +
          'remove "admin", or remove namespaces and queues from this entry',
        { key: `${key}.scopes`, ...optionalFile(file) },
      );
    }
    return {
      token: entry.token,
      scopes,
      namespaces: limited ? (entry.namespaces ?? []) : undefined,
      queues: limited ? (entry.queues ?? []) : undefined,
    };
  });
}

/**
 * The Host names `[http] hosts` accepts, lowercased and without IPv6 brackets: 'any' with "*", or by default
 * when the node listens off loopback (where a token is required, which a page of another site cannot hold).
 */
function resolveHosts(hosts: readonly string[] | undefined, listen: string): readonly string[] | 'any' {
  if (hosts === undefined) return isLoopbackHost(listen) ? [] : 'any';
  if (hosts.includes('*')) return 'any';
  return hosts.map(bareHostName);
}

/** A host name as compared: lowercased, without IPv6 brackets or a final dot (`[FD00::1]` → `fd00::1`). */
export function bareHostName(name: string): string {
  return name
    .toLowerCase()
    .replace(/^\[(.*)\]$/, '$1')
    .replace(/\.$/, '');
}

/** Whether `host` only accepts connections from this machine: 127.0.0.0/8, ::1 or localhost. */
export function isLoopbackHost(host: string): boolean {
  const bare = bareHostName(host);
  if (bare === 'localhost' || bare === '::1') return true;
  return /^(?:::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bare);
}

/** Flags win over what is below them; tables merge key by key, arrays and values replace. */
function mergeTables(base: RawTable, overrides: object): RawTable {
  const result = cloneTables(base);
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    const current = Object.hasOwn(result, key) ? result[key] : undefined;
    setOwn(result, key, isTable(value) ? mergeTables(isTable(current) ? current : {}, value) : value);
  }
  return result;
}

/** A ConfigError naming the first issue's key (after `prefix`, when the issues are of a part) and the others. */
export function issuesToError(
  issues: readonly z.core.$ZodIssue[],
  file: string | undefined,
  origins: ReadonlyMap<string, string | undefined> = new Map(),
  prefix: readonly PropertyKey[] = [],
): ConfigError {
  const described = issues
    .flatMap((issue) => describeIssue({ ...issue, path: [...prefix, ...issue.path] }))
    .map(({ key, message }) => {
      const origin = originOf(key, origins);
      return { key, message: origin === undefined ? message : `${message} (set by ${origin})` };
    });
  const [first, ...rest] = described;
  if (first === undefined) return new ConfigError('invalid configuration', optionalFile(file));
  const others = rest.map((issue) => `\n  also key "${issue.key}": ${issue.message}`).join('');
  return new ConfigError(`${first.message}${others}`, {
    ...(first.key === '' ? {} : { key: first.key }),
    ...optionalFile(file),
  });
}

function describeIssue(issue: z.core.$ZodIssue): Array<{ key: string; message: string }> {
  switch (issue.code) {
    case 'unrecognized_keys': {
      // The schema writes one line per unknown key, in the order of `issue.keys`.
      const lines = issue.message.split('\n');
      return issue.keys.map((key, index) => ({
        key: formatPath([...issue.path, key]),
        message: lines[index] ?? `unknown key "${key}"`,
      }));
    }
    case 'invalid_key':
      return [{ key: formatPath(issue.path), message: issue.issues[0]?.message ?? issue.message }];
    default:
      return [{ key: formatPath(issue.path), message: issue.message }];
  }
}

/** `['http', 'tokens', 0, 'token']` → `http.tokens[0].token`. */
function formatPath(segments: readonly PropertyKey[]): string {
  let result = '';
  for (const segment of segments) {
    if (typeof segment === 'number') result += `[${segment}]`;
    else result += result === '' ? String(segment) : `.${String(segment)}`;
  }
  return result;
}

/** The env variable that set `key` or a value containing it, unless a flag replaced it since. */
function originOf(key: string, origins: ReadonlyMap<string, string | undefined>): string | undefined {
  let best: { path: string; variable: string | undefined } | undefined;
  for (const [setPath, variable] of origins) {
    const boundary = key.charAt(setPath.length);
    const covers = key === setPath || (key.startsWith(setPath) && (boundary === '.' || boundary === '['));
    if (covers && (best === undefined || setPath.length > best.path.length))
      best = { path: setPath, variable };
  }
  return best?.variable;
}

/** Dotted paths of the values (not tables) that `overrides` sets. */
function leafPaths(overrides: object, prefix = ''): string[] {
  return Object.entries(overrides).flatMap(([key, value]) => {
    const dotted = prefix === '' ? key : `${prefix}.${key}`;
    if (value === undefined) return [];
    return isTable(value) ? leafPaths(value, dotted) : [dotted];
  });
}

function isNotFound(error: unknown): boolean {
  return error instanceof Error && 'code' in error && error.code === 'ENOENT';
}
