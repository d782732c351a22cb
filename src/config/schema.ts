// The raw shape of `baton.toml`: snake_case keys, units in the names, unknown keys refused. Each option is
// declared once here with its meaning, unit and default; `load.ts` turns the parsed result into a
// `ResolvedConfig`. Error texts are written here because only the schema knows what it expected.

import { isIP } from 'node:net';

import { z } from 'zod';

import { LOG_FORMATS } from '../log.js';
import type { LogLevel, TokenScope } from './types.js';

export const LOG_LEVELS = [
  'fatal',
  'error',
  'warn',
  'info',
  'debug',
  'trace',
  'silent',
] as const satisfies readonly LogLevel[];

export const TOKEN_SCOPES = ['admin', 'read', 'write', 'metrics'] as const satisfies readonly TokenScope[];

/** Queue names end up in table names, Redis keys and URLs, so they are kept to a safe alphabet. */
export const QUEUE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** The schema that holds Baton's own tables when `[store] schema` is not set. */
export const DEFAULT_STORE_SCHEMA = 'baton';

/**
 * Names of Baton's schema: written into statements unquoted and into channel names (at most 63 bytes with
 * the longest, `baton_queue_records`), so lower case, digits and `_`, at most 40, never a system schema (pg_).
 */
export const STORE_SCHEMA_PATTERN = /^(?!pg_)[a-z_][a-z0-9_]{0,39}$/;

/** A short, quoted view of a value for error messages ("got …"). */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'string')
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return String(value);
  if (value instanceof Date)
    return Number.isNaN(value.getTime()) ? 'an invalid date' : `the date ${value.toISOString()}`;
  if (Array.isArray(value)) return 'an array';
  return 'a table';
}

/** The known key closest to `key`, when it is close enough to be a likely typo. */
export function closestKey(key: string, known: readonly string[]): string | undefined {
  const wanted = key.toLowerCase();
  let best: { key: string; distance: number } | undefined;
  for (const candidate of known) {
    const distance = editDistance(wanted, candidate.toLowerCase());
    if (best === undefined || distance < best.distance) best = { key: candidate, distance };
  }
  if (best === undefined) return undefined;
  return best.distance <= Math.max(1, Math.floor(key.length / 3)) ? best.key : undefined;
}

/** Edits (insert, delete, substitute, swap two neighbours) that turn `a` into `b`. */
function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  const at = (i: number, j: number): number => rows[i]?.[j] ?? Number.POSITIVE_INFINITY;
  for (let i = 0; i <= a.length; i++) {
    const row: number[] = [];
    rows.push(row);
    for (let j = 0; j <= b.length; j++) {
      if (i === 0 || j === 0) {
        row.push(i + j);
        continue;
      }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(at(i - 1, j) + 1, (row[j - 1] ?? 0) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, at(i - 2, j - 2) + 1);
      row.push(best);
    }
  }
  return at(a.length, b.length);
}

type RawIssue = z.core.$ZodRawIssue;

/** An error map that says "expected <what>, got <value>" for every issue of one schema. */
function expecting(what: string): (issue: RawIssue) => string {
  return (issue) =>
    issue.input === undefined
      ? `required: expected ${what}`
      : `expected ${what}, got ${describeValue(issue.input)}`;
}

function integer(min: number, max?: number) {
  const what =
    max !== undefined
      ? `an integer from ${min} to ${max}`
      : min === 1
        ? 'a positive integer'
        : `an integer >= ${min}`;
  const error = expecting(what);
  const schema = z.number({ error }).int({ error }).min(min, { error });
  return max === undefined ? schema : schema.max(max, { error });
}

function text(what = 'a non-empty string') {
  const error = expecting(what);
  return z.string({ error }).min(1, { error });
}

/** A name for the Host header: a DNS name, an IPv4 address, an IPv6 address (bracketed or not), or "*". */
function hostName() {
  const error = expecting('a host name without scheme or port (such as "baton.example.com"), or "*"');
  return z
    .string({ error })
    .refine(
      (name) =>
        name === '*' ||
        /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?$/.test(name) ||
        isIP(name.replace(/^\[(.*)\]$/, '$1')) === 6,
      { error },
    );
}

/** A proxy's address or CIDR range, or one of the named ranges that fastify's trustProxy knows. */
function proxyAddress() {
  const error = expecting('an IP address, a CIDR range, "loopback", "linklocal" or "uniquelocal"');
  return z.string({ error }).refine(
    (entry) => {
      if (['loopback', 'linklocal', 'uniquelocal'].includes(entry)) return true;
      const [address = '', bits, ...rest] = entry.split('/');
      const version = isIP(address);
      if (version === 0 || rest.length > 0) return false;
      if (bits === undefined) return true;
      if (!/^\d{1,3}$/.test(bits)) return false;
      return Number(bits) <= (version === 4 ? 32 : 128);
    },
    { error },
  );
}

function boolean() {
  return z.boolean({ error: expecting('true or false') });
}

/**
 * A TOML table whose unknown keys are refused, with a suggestion when one is a likely typo. The message has
 * one line per unknown key, in the order of `issue.keys`, so that the loader can report each at its own path.
 */
function table<Shape extends z.core.$ZodLooseShape>(shape: Shape) {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: (issue) => {
      if (issue.code !== 'unrecognized_keys') return expecting('a table')(issue);
      return issue.keys
        .map((key) => {
          const match = closestKey(key, known);
          return `unknown key "${key}"${match === undefined ? '' : `, did you mean "${match}"?`}`;
        })
        .join('\n');
    },
  });
}

const nodeSchema = table({
  /** Name of this node in logs and in its group. Default: the machine's hostname. */
  name: text().optional(),
  /** Folder for the embedded store and the lock file, relative to the config file's folder. */
  data_dir: text().default('.baton'),
  /** Milliseconds SIGTERM waits for in-flight batches before aborting them. */
  shutdown_timeout_ms: integer(0).default(10_000),
  /** Milliseconds start waits for a backend before giving up (exit code 4). */
  startup_timeout_ms: integer(0).default(30_000),
});

const logSchema = table({
  /** Lowest level written to the log. */
  level: z.enum(LOG_LEVELS, { error: expecting(`one of ${LOG_LEVELS.join(', ')}`) }).default('info'),
  /** "pretty" (lines for people), "json" (one JSON object a line, for machines), or "auto": pretty on a terminal. */
  format: z.enum(LOG_FORMATS, { error: expecting(`one of ${LOG_FORMATS.join(', ')}`) }).default('auto'),
});

const httpTokenSchema = table({
  /** Bearer token; at least 8 characters. */
  token: text('a string of at least 8 characters').min(8, {
    error: expecting('a string of at least 8 characters'),
  }),
  /**
   * What the token may do: `admin`, `read`, `write`, `metrics`. Default: every scope for an entry without
   * `namespaces` and `queues`; `read` and `write` for an entry limited by them. `admin` cannot be limited.
   */
  scopes: z
    .array(z.enum(TOKEN_SCOPES, { error: expecting(`one of ${TOKEN_SCOPES.join(', ')}`) }), {
      error: expecting(`an array of scopes (${TOKEN_SCOPES.join(', ')})`),
    })
    .min(1, { error: expecting(`at least one scope (${TOKEN_SCOPES.join(', ')})`) })
    .optional(),
  /** Namespaces this token may use. Default: all, unless `queues` is set (then none). */
  namespaces: z.array(text(), { error: expecting('an array of strings') }).optional(),
  /** Queues this token may use (ingest, error queues, listings). Default: all, unless `namespaces` is set (then none). */
  queues: z.array(text(), { error: expecting('an array of queue names') }).optional(),
});

const httpSchema = table({
  /** Whether the HTTP API (ingest, status, dashboard) is served. */
  enabled: boolean().default(true),
  /** Address to listen on. Anything but loopback requires a token. */
  host: text().default('127.0.0.1'),
  /** TCP port; 0 picks a free one. */
  port: integer(0, 65_535).default(8080),
  /**
   * Bearer token with every scope, on every namespace and queue. Required off loopback unless
   * [[http.tokens]] is set; there, at least 16 characters (as every [[http.tokens]] token).
   */
  token: text().optional(),
  /** Request bodies larger than this many bytes are answered with 413. Default: 10 MiB. */
  body_limit_bytes: integer(1).default(10_485_760),
  /**
   * Names the Host header may carry (any port), besides the loopback names and `host`; "*" accepts any.
   * Default: only those when `host` is loopback, any name otherwise (a token is required there).
   */
  hosts: z.array(hostName(), { error: expecting('an array of host names') }).optional(),
  /** Milliseconds a client has to send a whole request, headers and body; 0 means no limit. */
  request_timeout_ms: integer(0).default(30_000),
  /**
   * Proxies whose X-Forwarded-Proto, -For and -Host headers are believed: true (any peer), false (none), or
   * their addresses and CIDR ranges ("10.0.0.0/8", or "loopback", "linklocal", "uniquelocal").
   */
  trust_proxy: z
    .union([z.boolean(), z.array(proxyAddress())], {
      error: expecting('true, false or an array of addresses'),
    })
    .default(false),
  /** Further tokens, each with its scopes and optionally limited to some namespaces and queues. */
  tokens: z.array(httpTokenSchema, { error: expecting('an array of tables ([[http.tokens]])') }).default([]),
});

const storeSchema = table({
  /** Folder of the embedded PGlite database, relative to the config file's folder. "" means <data_dir>/store. */
  path: z.string({ error: expecting('a string') }).default(''),
  /** PostgreSQL server URL (postgres://user:password@host:port/db). Set: the server is the store, not PGlite. */
  url: z
    .string({ error: expecting('a postgres:// URL') })
    .regex(/^postgres(?:ql)?:\/\//, { error: expecting('a postgres:// or postgresql:// URL') })
    .optional(),
  /** Connections of the node's pool to the PostgreSQL server, at most (one LISTEN connection comes beside it). */
  pool_size: integer(1, 1000).default(10),
  /**
   * Milliseconds a statement (lock waits included) may run before the server ends it; schema changes excepted.
   * 0: query_timeout_ms less 5 s (less a fifth when query_timeout_ms is under 25 s); both 0: no limit.
   */
  statement_timeout_ms: integer(0).default(0),
  /**
   * Milliseconds the node waits for the server's answer to one statement before it takes the connection
   * for silent (cut off without a reset), asks the server to cancel the statement and replaces the
   * connection; 0 means forever. Raised to statement_timeout_ms + 5 s, so that the server ends a statement first.
   */
  query_timeout_ms: integer(0).default(30_000),
  /**
   * The schema of Baton's own tables (queues, events, leases, migrations…), created when missing; handlers'
   * tables stay where their schema says (unqualified: the connection's default, normally public). The same
   * name serves every database Baton uses (queue databases, a group's coordination database).
   */
  schema: z
    .string({ error: expecting('a schema name') })
    .regex(STORE_SCHEMA_PATTERN, {
      error: expecting(
        'a schema name: lower-case letters, digits and _, at most 40, not starting with a digit or pg_',
      ),
    })
    .default(DEFAULT_STORE_SCHEMA),
});

const redisSchema = table({
  /** Redis URL (redis://[:password@]host:port[/db]), used by queues with backend = "redis". */
  url: z
    .string({ error: expecting('a redis:// URL') })
    .regex(/^rediss?:\/\//, { error: expecting('a redis:// or rediss:// URL') })
    .default('redis://127.0.0.1:6379'),
});

const queueSchema = table({
  /** Module exporting the handler: a path relative to the config file's folder, or a package name. Required. */
  handler: text('a module path or package name'),
  /**
   * Where the queue's records wait: "store" (a table in the store), "redis" (a Redis list) or "postgres" (a
   * table in another PostgreSQL database, at `url`).
   */
  backend: z
    .enum(['store', 'redis', 'postgres'], { error: expecting('"store", "redis" or "postgres"') })
    .default('store'),
  /** URL of the PostgreSQL database that holds the queue's records (backend = "postgres" only; required there). */
  url: z
    .string({ error: expecting('a postgres:// URL') })
    .regex(/^postgres(?:ql)?:\/\//, { error: expecting('a postgres:// or postgresql:// URL') })
    .optional(),
  /** Redis list that producers LPUSH to (backend = "redis"). Default: the queue's name. */
  key: text().optional(),
  /** Folder of the queue's SQL migrations, relative to the config file. Default: <handler folder>/migrations/<queue>. */
  migrations: text().optional(),
  /** Records claimed and committed together. */
  batch_size: integer(1, 100_000).default(500),
  /** Batches in flight at once for this queue on this node. Default: 4 on a shared backend, 1 on the embedded store. */
  concurrency: integer(1, 1024).optional(),
  /** Failed runs of a record before it goes to the error queue errors-<name>. */
  max_attempts: integer(1).default(5),
  /** Milliseconds one handler call may take before its AbortSignal fires. */
  timeout_ms: integer(1).default(30_000),
  /** Milliseconds of the first back-off after a failure; it doubles up to retry_max_delay_ms, with jitter. */
  retry_delay_ms: integer(0).default(1_000),
  /** Milliseconds the back-off never exceeds; at least retry_delay_ms. */
  retry_max_delay_ms: integer(0).default(32_000),
  /** Embedded store only: ingest may run the handler inside the request's transaction when there is no backlog. */
  inline: boolean().default(true),
  /** Which nodes consume the queue: "any" (every node) or "primary" (only the group's primary). */
  run_on: z.enum(['any', 'primary'], { error: expecting('"any" or "primary"') }).default('any'),
  /**
   * "key": records of one key are processed in publish order, never two at once, and claims go round the
   * keys with work; "none" (default): no order between records.
   */
  ordering: z.enum(['none', 'key'], { error: expecting('"none" or "key"') }).default('none'),
  /** Milliseconds a record's idempotency id is remembered: a record with the same id within it is dropped. */
  dedup_window_ms: integer(1, 366 * 86_400_000).default(86_400_000),
  /** Records per second the queue may run, at most, across every node of the group (unset: no limit). */
  rate_limit: z
    .number({ error: expecting('a number of records per second above 0') })
    .positive({ error: expecting('a number of records per second above 0') })
    .max(1_000_000, { error: expecting('at most 1000000 records per second') })
    .optional(),
  /**
   * Batches that may hold records of one key at once, across every node (ordering = "key" only; default 1).
   * Above 1, a key's records start in publish order but may run side by side, and a failed one no longer
   * holds back those after it.
   */
  key_concurrency: integer(1, 10_000).optional(),
  /** Records per second one key may run, at most, across every node (ordering = "key" only; unset: no limit). */
  key_rate_limit: z
    .number({ error: expecting('a number of records per second above 0') })
    .positive({ error: expecting('a number of records per second above 0') })
    .max(1_000_000, { error: expecting('at most 1000000 records per second') })
    .optional(),
}).superRefine((queue, context) => {
  for (const option of ['key_concurrency', 'key_rate_limit'] as const) {
    if (queue[option] !== undefined && queue.ordering !== 'key') {
      context.addIssue({
        code: 'custom',
        path: [option],
        input: queue[option],
        message: `only for ordering = "key" (this queue's ordering is "${queue.ordering}")`,
      });
    }
  }
  if (queue.backend === 'postgres' && queue.url === undefined) {
    context.addIssue({
      code: 'custom',
      path: ['url'],
      input: queue.url,
      message: 'required when backend = "postgres": expected a postgres:// or postgresql:// URL',
    });
  }
  if (queue.backend !== 'postgres' && queue.url !== undefined) {
    context.addIssue({
      code: 'custom',
      path: ['url'],
      input: queue.url,
      message: `only for backend = "postgres" (this queue's backend is "${queue.backend}")`,
    });
  }
  if (queue.retry_max_delay_ms < queue.retry_delay_ms) {
    context.addIssue({
      code: 'custom',
      path: ['retry_max_delay_ms'],
      input: queue.retry_max_delay_ms,
      message: `expected at least retry_delay_ms (${queue.retry_delay_ms}), got ${queue.retry_max_delay_ms}`,
    });
  }
});

/** The files whose appearance or removal marks a change of role: PostgreSQL ≥ 12, then older servers. */
export const DEFAULT_FAILOVER_FILES: readonly string[] = [
  'standby.signal',
  'recovery.signal',
  'recovery.conf',
  'recovery.done',
];

const groupSchema = table({
  /** Name of the group: nodes with the same name and coordination backend elect one primary. Required. */
  name: text('a group name'),
  /** How the primary is chosen. */
  elector: z
    .enum(['standalone', 'postgres', 'redis', 'pg-recovery'], {
      error: expecting('"standalone", "postgres", "redis" or "pg-recovery"'),
    })
    .default('standalone'),
  /** Coordination backend URL. Default: the store's URL (postgres, pg-recovery) or [redis] url (redis). */
  url: text().optional(),
  /** Milliseconds a lease lasts without renewal. */
  lease_ms: integer(100).default(5_000),
  /** Milliseconds without a renewal after which a primary stops its primary-only work; below lease_ms. */
  renew_deadline_ms: integer(50).optional(),
  /** Milliseconds between renewals, checks and membership heartbeats; below renew_deadline_ms. */
  heartbeat_ms: integer(10).default(500),
  /** Milliseconds primary-only work gets to stop after a step-down. Default: lease_ms - renew_deadline_ms. */
  stop_timeout_ms: integer(0).optional(),
  /** pg-recovery: folder to watch for failover files. */
  watch_path: text().optional(),
  /**
   * pg-recovery: files under watch_path whose change triggers a re-check at once. Default: the files of
   * DEFAULT_FAILOVER_FILES; `[]` watches none (the role is then checked every heartbeat_ms only).
   */
  failover_files: z
    .array(text(), { error: expecting('an array of file names') })
    .default([...DEFAULT_FAILOVER_FILES]),
});

const componentSchema = table({
  /** Module exporting the component, relative to the config file's folder, or a package name. Required. */
  module: text('a module path or package name'),
  /** LISTEN/NOTIFY processor modules: the channels to listen on. */
  channels: z.array(text(), { error: expecting('an array of channel names') }).optional(),
});

const eventsSchema = table({
  /** Whether the node serves the event log (HTTP API, stream, listeners). */
  enabled: boolean().default(true),
  /** Days events are kept; older ones are deleted by the primary (or a node not in a group). 0 keeps them all. */
  retention_days: integer(0).default(0),
  /** Events accepted in one POST /v1/events request, at most. */
  max_batch: integer(1, 100_000).default(10_000),
  /** Open event streams (SSE) one client address may hold at once. */
  max_streams_per_client: integer(1, 10_000).default(16),
});

const taskSchema = table({
  /** Shell command run by /bin/sh -c, in the config file's folder. Set this or `module`. */
  command: text('a shell command').optional(),
  /** Module whose default export (or `run`) is an async function (context) => void. Set this or `command`. */
  module: text('a module path or package name').optional(),
  /** Namespace of the task's state events (task.<name>.<state>) and of the client it gets. */
  namespace: text().default('default'),
  /** Milliseconds a run may take before it is stopped and marked failed; 0 means no limit. */
  timeout_ms: integer(0).default(0),
}).superRefine((task, context) => {
  if ((task.command === undefined) === (task.module === undefined)) {
    context.addIssue({
      code: 'custom',
      path: task.command === undefined ? [] : ['module'],
      input: task.module,
      message: 'expected exactly one of "command" or "module"',
    });
  }
});

const ruleSchema = table({
  /** The events that fire the rule: namespace (default "default"), key, and optionally an exact value. */
  on: table({
    namespace: text().default('default'),
    key: text('an event key'),
    value: z.string({ error: expecting('a string') }).optional(),
  }),
  /** What the rule does to its task. */
  action: z.enum(['start', 'stop', 'restart'], { error: expecting('"start", "stop" or "restart"') }),
  /** Name of a [tasks.<name>] table. */
  task: text('a task name'),
  /** What the new primary does with a run of this rule whose node died: "mark" it lost, or "restart" it. */
  on_lost: z.enum(['mark', 'restart'], { error: expecting('"mark" or "restart"') }).default('mark'),
});

const scheduleSchema = table({
  /** A cron expression of 5 fields (minute first) or 6 (second first), read in `timezone`. Set this or `every`. */
  cron: text('a cron expression').optional(),
  /** A fixed interval such as "30s", "5m", "1h30m" or "500ms", aligned to the epoch. Set this or `cron`. */
  every: text('a duration such as "30s"').optional(),
  /** IANA time zone the cron expression is read in. Default "UTC". */
  timezone: text('an IANA time zone such as "Europe/Paris"').default('UTC'),
  /**
   * What a new primary does with the ticks that fell while no primary was acting: "skip" them (counted as
   * missed), apply the "last" one only, or apply "all" of them, the most recent `missed_limit` at most.
   */
  missed: z.enum(['skip', 'last', 'all'], { error: expecting('"skip", "last" or "all"') }).default('skip'),
  /** missed = "all": ticks applied at most on a catch-up; older ones are counted as missed. */
  missed_limit: integer(1, 100_000).default(100),
  /** Milliseconds of random delay added to each firing (the tick keeps its time). 0: none. */
  jitter_ms: integer(0, 3_600_000).default(0),
  /** Namespace of the event schedule.<name>.fired appended at each tick. */
  namespace: text().default('default'),
  /** Action: publish one record to a queue; `payload` may hold {schedule}, {tick} and {term}. */
  publish: table({
    queue: text('a queue name'),
    payload: z.string({ error: expecting('a string') }).optional(),
  }).optional(),
  /** Action: append an event; its context carries the schedule, the tick time and the term. */
  event: table({
    namespace: text().default('default'),
    key: text('an event key'),
    value: z.string({ error: expecting('a string') }).optional(),
  }).optional(),
  /** Action: start a run of this [tasks.<name>]. */
  task: text('a task name').optional(),
}).superRefine((schedule, context) => {
  if ((schedule.cron === undefined) === (schedule.every === undefined)) {
    context.addIssue({
      code: 'custom',
      path: schedule.cron === undefined ? [] : ['every'],
      input: schedule.every,
      message: 'expected exactly one of "cron" or "every"',
    });
  }
  const actions = [schedule.publish, schedule.event, schedule.task].filter((action) => action !== undefined);
  if (actions.length !== 1) {
    context.addIssue({
      code: 'custom',
      path: [],
      input: undefined,
      message: `expected exactly one action of "publish", "event" or "task", got ${actions.length}`,
    });
  }
});

const TASK_STATES = ['pending', 'running', 'succeeded', 'failed', 'stopped', 'lost'] as const;

/** One condition: an event's key (with `*` wildcards) and maybe its value, or another task's state. */
const conditionFields = {
  /** An event key of the execution; `*` matches any run of characters ("batch.*.done"). */
  key: text('an event key').optional(),
  /** With `key`: the event's exact value. */
  value: z.string({ error: expecting('a string') }).optional(),
  /** A task of the same workflow, whose latest run in the execution must be in `state`. */
  task: text('a task name').optional(),
  state: z
    .enum(TASK_STATES, { error: expecting(TASK_STATES.map((state) => `"${state}"`).join(', ')) })
    .optional(),
};

interface ConditionFields {
  key?: string | undefined;
  value?: string | undefined;
  task?: string | undefined;
  state?: string | undefined;
}

function checkLeaf(leaf: ConditionFields, context: z.RefinementCtx, others: number): void {
  const kinds = (leaf.key === undefined ? 0 : 1) + (leaf.task === undefined ? 0 : 1) + others;
  if (kinds !== 1) {
    context.addIssue({
      code: 'custom',
      path: [],
      input: undefined,
      message: 'expected exactly one of "key", "task", "all" or "any"',
    });
  } else if (leaf.value !== undefined && leaf.key === undefined) {
    context.addIssue({
      code: 'custom',
      path: ['value'],
      input: leaf.value,
      message: '"value" goes with "key"',
    });
  } else if ((leaf.task === undefined) !== (leaf.state === undefined)) {
    context.addIssue({
      code: 'custom',
      path: leaf.task === undefined ? ['state'] : ['task'],
      input: undefined,
      message: '"task" and "state" go together',
    });
  }
}

const leafConditionSchema = table(conditionFields).superRefine((leaf, context) =>
  checkLeaf(leaf, context, 0),
);

const conditionSchema = table({
  ...conditionFields,
  /** Fires when every one of these has been met in the execution (events seen, task states held). */
  all: z
    .array(leafConditionSchema, { error: expecting('an array of conditions') })
    .min(1)
    .optional(),
  /** Fires when any one of these is met. */
  any: z
    .array(leafConditionSchema, { error: expecting('an array of conditions') })
    .min(1)
    .optional(),
}).superRefine((condition, context) =>
  checkLeaf(
    condition,
    context,
    (condition.all === undefined ? 0 : 1) + (condition.any === undefined ? 0 : 1),
  ),
);

const workflowTaskSchema = table({
  /** Shell command run by /bin/sh -c, in the config file's folder. Set this or `module`. */
  command: text('a shell command').optional(),
  /** Module whose default export (or `run`) is an async function (context) => void. Set this or `command`. */
  module: text('a module path or package name').optional(),
  /** Milliseconds a run may take before it is stopped and marked failed; 0 means no limit. */
  timeout_ms: integer(0).default(0),
  /** Start when these tasks of the same execution have all succeeded. */
  after: z.array(text('a task name'), { error: expecting('an array of task names') }).default([]),
  /** What a new primary does with a run whose node died: "mark" it lost, or "restart" it in its execution. */
  on_lost: z.enum(['mark', 'restart'], { error: expecting('"mark" or "restart"') }).default('mark'),
  /** A function, in a workflow defined in code. */
  run: z
    .custom<(ctx: never) => unknown>((value) => typeof value === 'function', {
      error: expecting('a function'),
    })
    .optional(),
}).superRefine((task, context) => {
  const given = [task.command, task.module, task.run].filter((value) => value !== undefined).length;
  if (given !== 1) {
    context.addIssue({
      code: 'custom',
      path: [],
      input: undefined,
      message: 'expected exactly one of "command" or "module"',
    });
  }
});

const workflowRuleSchema = table({
  /** The condition, on events of the rule's own execution. */
  on: conditionSchema,
  action: z.enum(['start', 'stop', 'restart'], { error: expecting('"start", "stop" or "restart"') }),
  /** A task of the same workflow. */
  task: text('a task name'),
});

const workflowTriggerSchema = table({
  /** An event that starts an execution: namespace (default the workflow's), key (`*` wildcards), value. */
  on: table({
    namespace: text().optional(),
    key: text('an event key'),
    value: z.string({ error: expecting('a string') }).optional(),
  }).optional(),
  /** A [schedules.<name>] whose ticks start an execution (its schedule.<name>.fired event). */
  schedule: text('a schedule name').optional(),
}).superRefine((trigger, context) => {
  if ((trigger.on === undefined) === (trigger.schedule === undefined)) {
    context.addIssue({
      code: 'custom',
      path: [],
      input: undefined,
      message: 'expected exactly one of "on" or "schedule"',
    });
  }
});

export const workflowSchema = table({
  /**
   * A module whose default export (or export `workflow`) is the workflow's definition (defineWorkflow): the
   * node loads it at start. Nothing else may be set beside it.
   */
  module: text('a module path or package name').optional(),
  /** Namespace of the executions' events and of the tasks' clients. */
  namespace: text().default('default'),
  /** Executions running at once, at most; 0: no limit. */
  max_concurrent: integer(0, 100_000).default(0),
  /** A trigger while max_concurrent executions run: "queue" it until one ends, or "skip" it. */
  over_limit: z.enum(['queue', 'skip'], { error: expecting('"queue" or "skip"') }).default('queue'),
  /** What starts an execution, besides `baton workflows start`. */
  triggers: z.array(workflowTriggerSchema, { error: expecting('an array of triggers') }).default([]),
  /** The workflow's tasks, keyed by name. */
  tasks: z
    .record(
      z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, {
        error: (issue) =>
          `invalid task name ${describeValue(issue.input)}: expected 1 to 128 letters, digits, "_", "." or "-"`,
      }),
      workflowTaskSchema,
      { error: expecting('a table of tasks') },
    )
    .prefault({}),
  /** Rules scoped to one execution: on a condition, start, stop or restart a task. */
  rules: z
    .array(workflowRuleSchema, { error: expecting('an array of tables ([[workflows.<name>.rules]])') })
    .default([]),
}).superRefine((workflow, context) => {
  if (workflow.module === undefined) return;
  const beside = [
    workflow.namespace !== 'default' && 'namespace',
    workflow.max_concurrent !== 0 && 'max_concurrent',
    workflow.over_limit !== 'queue' && 'over_limit',
    workflow.triggers.length > 0 && 'triggers',
    Object.keys(workflow.tasks).length > 0 && 'tasks',
    workflow.rules.length > 0 && 'rules',
  ].filter((key) => key !== false);
  if (beside[0] !== undefined) {
    context.addIssue({
      code: 'custom',
      path: [beside[0]],
      input: undefined,
      message: `"${beside[0]}" cannot be set beside "module": the module defines the workflow`,
    });
  }
});

/** A workflow as a TOML table or a defineWorkflow() argument says it. */
export type WorkflowInput = z.input<typeof workflowSchema>;

const queueNameSchema = z.string().regex(QUEUE_NAME_PATTERN, {
  error: (issue) =>
    `invalid queue name ${describeValue(issue.input)}: expected 1 to 128 letters, digits, "_", "." or "-", ` +
    'starting with a letter or digit',
});

/** A queue's name: its migrations are recorded as `<queue>/<file>`, beside Baton's own `baton/<file>`. */
const queueKeySchema = queueNameSchema.refine((name) => name !== 'baton', {
  error: 'the queue name "baton" is reserved: Baton\'s own migrations are recorded under it',
});

export const rawConfigSchema = table({
  node: nodeSchema.prefault({}),
  log: logSchema.prefault({}),
  http: httpSchema.prefault({}),
  store: storeSchema.prefault({}),
  redis: redisSchema.prefault({}),
  /** One table per queue, keyed by queue name. */
  queues: z.record(queueKeySchema, queueSchema, { error: expecting('a table of queues') }).prefault({}),
  /** The group this node belongs to; absent: the node is not in a group and acts alone. */
  group: groupSchema.optional(),
  /** Long-running components, keyed by name. */
  components: z
    .record(queueNameSchema, componentSchema, { error: expecting('a table of components') })
    .prefault({}),
  /** The event log and its HTTP API. */
  events: eventsSchema.prefault({}),
  /** Tasks that rules start, stop and restart, keyed by name. */
  tasks: z.record(queueNameSchema, taskSchema, { error: expecting('a table of tasks') }).prefault({}),
  /** Rules: on an event, start, stop or restart a task. Run by the primary. */
  rules: z.array(ruleSchema, { error: expecting('an array of tables ([[rules]])') }).default([]),
  /** Schedules: on a cron expression or an interval, publish a record, append an event or start a task. */
  schedules: z
    .record(queueNameSchema, scheduleSchema, { error: expecting('a table of schedules') })
    .prefault({}),
  /** Workflows: tasks and rules scoped to one execution, started by triggers. Run by the primary. */
  workflows: z
    .record(queueNameSchema, workflowSchema, { error: expecting('a table of workflows') })
    .prefault({}),
});

/**
 * What a config file may contain, as an object: the TOML's tables and snake_case keys, every one optional
 * but a queue's `handler` (and a few like it). For a config written in code: a misspelt key fails to compile.
 */
export type ConfigInput = z.input<typeof rawConfigSchema>;

/**
 * Returns `config` as it is: it only gives a config written in code its type, so that an editor completes its
 * keys and a misspelt one fails to compile (`startNode(defineConfig({ queues: { … } }))`).
 */
export function defineConfig(config: ConfigInput): ConfigInput {
  return config;
}

/** The raw config after validation and schema defaults, before paths and derived values are resolved. */
export type ParsedConfig = z.output<typeof rawConfigSchema>;

type DeepPartial<T> =
  T extends ReadonlyArray<unknown>
    ? T
    : T extends object
      ? { [K in keyof T]?: DeepPartial<T[K]> | undefined }
      : T;

/** Command-line flags, in the raw snake_case shape. Keys set to `undefined` are ignored. */
export type RawOverrides = DeepPartial<ConfigInput>;
