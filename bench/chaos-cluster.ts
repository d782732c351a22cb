// The cluster of the chaos run (bench/chaos.ts): a private PostgreSQL and a private Redis, three node
// processes that each reach PostgreSQL through a TCP proxy of their own (so that one node's connections can be
// black-holed), and what the run does to them: start, kill -9, SIGSTOP/SIGCONT, and reading their role.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import pg from 'pg';

import { DEFAULT_STORE_SCHEMA } from '../src/store/baton-schema.js';
import type { PrivatePostgres, PrivateRedis } from '../test/support/private-services.js';
import type { TcpProxy } from '../test/support/tcp-proxy.js';
import { startTcpProxy } from '../test/support/tcp-proxy.js';
import type { GroupLog, NodeRun } from './failover-support.js';
import type { Deadline } from './support.js';
import { groupNodeToml, LOOPBACK, pause, ROOT, stopNodeChild, tomlString, waitForReady } from './support.js';

export const FIXTURES = join(ROOT, 'bench', 'chaos-fixtures');
export const GROUP = 'chaos';
export const LEASE_MS = 2000;
export const RENEW_DEADLINE_MS = 1200;
export const HEARTBEAT_MS = 200;
/** The Redis list producers push the records of queue `rq` to. */
export const REDIS_KEY = 'chaos-rq';
/**
 * The ordered queues (ordering = "key"), one on the store and one on Redis, the Redis list of the second, and
 * how long they remember an idempotency id: an hour, longer than any run, so that every resend is dropped.
 */
export const KEYED_STORE_QUEUE = 'kq';
export const KEYED_REDIS_QUEUE = 'krq';
export const KEYED_REDIS_KEY = 'chaos-krq';
export const DEDUP_WINDOW_MS = 3_600_000;
/** Namespaces: the listened events, and the chain of rules and tasks. */
export const EVENTS_NAMESPACE = 'chaos';
export const CHAIN_NAMESPACE = 'chain';
/** The schedule (every 1 s, missed = "all") and the store queue its ticks publish to. */
export const SCHEDULE = 'beat';
export const SCHEDULE_EVERY_MS = 1000;
export const SCHEDULE_QUEUE = 'sq';
/**
 * The workflow: its namespace (also the schedule's, whose schedule.beat.fired events trigger it), the key of
 * the load's triggering events, and its DAG split → left, split → right, (left, right) → merge.
 */
export const WORKFLOW = 'flow';
export const WORKFLOW_NAMESPACE = 'flow';
export const WORKFLOW_START_KEY = 'flow.start';
export const WORKFLOW_TASKS = ['split', 'left', 'right', 'merge'] as const;
/**
 * Executions of the workflow running at once, at most; more wait in its queue. Low on purpose: about 1.5
 * triggers a second of executions that take about a second fill it at times, and a failover's backlog does,
 * so that queued executions are promoted, by the primary that queued them or by the next one.
 */
export const WORKFLOW_MAX_CONCURRENT = 3;

export type Row = Record<string, unknown>;

/**
 * The chaos process's own connection to PostgreSQL: direct, never through a proxy. Two connections. Its
 * search path ends with Baton's schema, as the nodes' do, so that Baton's tables and the handlers' tables
 * (in public) are both found unqualified.
 */
export class Database {
  readonly #pool: pg.Pool;

  constructor(url: string) {
    this.#pool = new pg.Pool({
      connectionString: url,
      max: 2,
      connectionTimeoutMillis: 3000,
      options: `-c search_path=public,${DEFAULT_STORE_SCHEMA}`,
    });
    // An idle client that loses its server (a PostgreSQL restart) emits this; the next query reconnects.
    this.#pool.on('error', () => undefined);
  }

  /** Runs a statement; retried through a PostgreSQL restart until it answers or `deadline` passes. */
  async rows(text: string, params: readonly unknown[], deadline: Deadline): Promise<Row[]> {
    for (;;) {
      try {
        const result = await this.#pool.query<Row>(text, [...params]);
        return result.rows;
      } catch (error) {
        if (!isConnectionError(error)) throw error;
        deadline.check();
        await pause(200, deadline.signal);
      }
    }
  }

  close(): Promise<void> {
    return this.#pool.end();
  }
}

function isConnectionError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = 'code' in error ? String(error.code) : '';
  // Class 08 (connection), 57P (operator intervention: a shutdown), or no code at all (a socket error).
  return code === '' || code === 'undefined' || code.startsWith('08') || code.startsWith('57P');
}

export type NodeState = 'up' | 'killed' | 'paused' | 'starting';

/** One node: its config, port and proxy stay; each start is a new process followed by the group log. */
export class ChaosNode {
  readonly name: string;
  readonly port: number;
  readonly proxy: TcpProxy;
  readonly #config: string;
  readonly #log: GroupLog;
  state: NodeState = 'starting';
  run: NodeRun | undefined;

  private constructor(name: string, port: number, proxy: TcpProxy, config: string, log: GroupLog) {
    this.name = name;
    this.port = port;
    this.proxy = proxy;
    this.#config = config;
    this.#log = log;
  }

  static async create(options: {
    dir: string;
    name: string;
    port: number;
    postgres: PrivatePostgres;
    redis: PrivateRedis;
    chainFile: string;
    flowFile: string;
    log: GroupLog;
  }): Promise<ChaosNode> {
    const proxy = await startTcpProxy({ host: LOOPBACK, port: options.postgres.port });
    const home = join(options.dir, options.name);
    await mkdir(home, { recursive: true });
    const config = join(home, 'baton.toml');
    const storeUrl = `postgres://postgres@${LOOPBACK}:${proxy.port}/postgres`;
    await writeFile(config, nodeConfig(options.name, options.port, home, storeUrl, options));
    return new ChaosNode(options.name, options.port, proxy, config, options.log);
  }

  get url(): string {
    return `http://${LOOPBACK}:${this.port}`;
  }

  /** Starts a new process and waits until /readyz answers 200. */
  async start(deadline: Deadline): Promise<void> {
    this.state = 'starting';
    const env: NodeJS.ProcessEnv = { NO_COLOR: '1', CHAOS_NODE: this.name };
    for (const [key, value] of Object.entries(process.env)) {
      if (!key.startsWith('BATON_') && value !== undefined) env[key] ??= value;
    }
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'baton.js'), '-c', this.#config, 'run'], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.run = this.#log.follow(this.name, this.port, child);
    await once(child, 'spawn');
    await waitForReady(this.run.child, deadline);
    this.state = 'up';
  }

  /** kill -9; resolves the kill time (epoch ms) once the process is gone. */
  async kill(): Promise<number> {
    const run = this.#alive();
    const exited = once(run.child.process, 'exit');
    run.killedAt = Date.now();
    this.state = 'killed';
    run.child.process.kill('SIGKILL');
    await exited;
    return run.killedAt;
  }

  pause(): number {
    this.#alive().child.process.kill('SIGSTOP');
    this.state = 'paused';
    return Date.now();
  }

  resume(): void {
    this.#alive().child.process.kill('SIGCONT');
    this.state = 'up';
  }

  /** True when the process exited without being killed or stopped by the run. */
  get crashed(): boolean {
    const run = this.run;
    return run !== undefined && run.exitedAt !== undefined && run.killedAt === undefined && !run.stopping;
  }

  /** SIGCONT (in case), SIGTERM, then SIGKILL after a grace period; nothing when no process runs. */
  async stop(graceMs = 5000): Promise<void> {
    const run = this.run;
    if (!run || run.exitedAt !== undefined || run.child.process.exitCode !== null) return;
    run.stopping = true;
    run.child.process.kill('SIGCONT');
    await stopNodeChild(run.child, graceMs);
  }

  /** Last resort on exit: SIGKILL, synchronously. */
  killNow(): void {
    const proc = this.run?.child.process;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGCONT');
      proc.kill('SIGKILL');
    }
  }

  #alive(): NodeRun {
    const run = this.run;
    if (!run || run.exitedAt !== undefined) throw new Error(`node ${this.name} is not running`);
    return run;
  }
}

function nodeConfig(
  name: string,
  port: number,
  home: string,
  storeUrl: string,
  options: { redis: PrivateRedis; chainFile: string; flowFile: string },
): string {
  const handler = tomlString(join(FIXTURES, 'sink-handler.ts'));
  const task = (letter: string, next?: string): string =>
    tomlString(
      `sh ${join(FIXTURES, 'chain-task.sh')} ${letter} ${options.chainFile}${next ? ` ${next}` : ''}`,
    );
  const queue = [
    'batch_size = 100',
    'concurrency = 2',
    'max_attempts = 20',
    'retry_delay_ms = 200',
    'retry_max_delay_ms = 2000',
  ];
  const keyed = tomlString(join(FIXTURES, 'keyed-sink-handler.ts'));
  const ordered = ['ordering = "key"', `dedup_window_ms = ${DEDUP_WINDOW_MS}`, ...queue];
  const lines = [
    ...groupNodeToml({
      name,
      dataDir: join(home, 'data'),
      port,
      storeUrl,
      poolSize: 4,
      redisUrl: options.redis.url,
      group: {
        name: GROUP,
        elector: 'postgres',
        leaseMs: LEASE_MS,
        renewDeadlineMs: RENEW_DEADLINE_MS,
        heartbeatMs: HEARTBEAT_MS,
      },
    }),
    '',
    '[queues.rq]',
    `handler = ${handler}`,
    'backend = "redis"',
    `key = "${REDIS_KEY}"`,
    ...queue,
    '',
    '[queues.pq]',
    `handler = ${handler}`,
    'backend = "store"',
    ...queue,
    '',
    `[queues.${KEYED_STORE_QUEUE}]`,
    `handler = ${keyed}`,
    'backend = "store"',
    ...ordered,
    '',
    `[queues.${KEYED_REDIS_QUEUE}]`,
    `handler = ${keyed}`,
    'backend = "redis"',
    `key = "${KEYED_REDIS_KEY}"`,
    ...ordered,
    '',
    `[queues.${SCHEDULE_QUEUE}]`,
    `handler = ${tomlString(join(FIXTURES, 'tick-handler.ts'))}`,
    'backend = "store"',
    ...queue,
    '',
    `[schedules.${SCHEDULE}]`,
    `every = "${SCHEDULE_EVERY_MS}ms"`,
    'missed = "all"',
    `namespace = "${WORKFLOW_NAMESPACE}"`,
    `publish = { queue = "${SCHEDULE_QUEUE}" }`,
    '',
    '[components.witness]',
    `module = ${tomlString(join(FIXTURES, 'witness.ts'))}`,
    '',
    '[tasks.a]',
    `namespace = "${CHAIN_NAMESPACE}"`,
    `command = ${task('A', 'chain.a.done')}`,
    'timeout_ms = 60000',
    '',
    '[tasks.b]',
    `namespace = "${CHAIN_NAMESPACE}"`,
    `command = ${task('B')}`,
    'timeout_ms = 60000',
    '',
    '[[rules]]',
    `on = { namespace = "${CHAIN_NAMESPACE}", key = "chain.start" }`,
    'action = "start"',
    'task = "a"',
    'on_lost = "mark"',
    '',
    '[[rules]]',
    `on = { namespace = "${CHAIN_NAMESPACE}", key = "chain.a.done" }`,
    'action = "start"',
    'task = "b"',
    'on_lost = "mark"',
    '',
    ...workflowConfig(options.flowFile),
  ];
  return `${lines.join('\n')}\n`;
}

/**
 * The workflow, triggered by the load's flow.start events and by every tick of the schedule: split, then
 * left and right (which sleep a little, so that faults find runs running), then merge. Every task but left
 * is restarted when lost; a lost left ends its execution lost.
 */
function workflowConfig(flowFile: string): string[] {
  const task = (name: string, sleep: string, onLost: 'mark' | 'restart', after: string[]): string[] => [
    '',
    `[workflows.${WORKFLOW}.tasks.${name}]`,
    `command = ${tomlString(`sh ${join(FIXTURES, 'flow-task.sh')} ${flowFile} ${sleep}`)}`,
    'timeout_ms = 60000',
    `after = [${after.map((upstream) => `"${upstream}"`).join(', ')}]`,
    `on_lost = "${onLost}"`,
  ];
  return [
    `[workflows.${WORKFLOW}]`,
    `namespace = "${WORKFLOW_NAMESPACE}"`,
    `max_concurrent = ${WORKFLOW_MAX_CONCURRENT}`,
    'over_limit = "queue"',
    `triggers = [{ on = { key = "${WORKFLOW_START_KEY}" } }, { schedule = "${SCHEDULE}" }]`,
    ...task('split', '0', 'restart', []),
    ...task('left', '0.3', 'mark', ['split']),
    ...task('right', '0.3', 'restart', ['split']),
    ...task('merge', '0', 'restart', ['left', 'right']),
  ];
}

/** What one node says of the group (GET /v1/cluster), or undefined when it does not answer in time. */
export interface ClusterView {
  readonly node: string;
  readonly role: string;
  readonly term: number;
  readonly primary: string | undefined;
}

export async function clusterView(node: ChaosNode): Promise<ClusterView | undefined> {
  try {
    const response = await fetch(`${node.url}/v1/cluster`, { signal: AbortSignal.timeout(1000) });
    if (!response.ok) return undefined;
    const value: unknown = await response.json();
    if (typeof value !== 'object' || value === null) return undefined;
    const fields = new Map<string, unknown>(Object.entries(value));
    const [name, role, term, primary] = ['node', 'role', 'term', 'primary'].map((key) => fields.get(key));
    if (typeof name !== 'string' || typeof role !== 'string' || typeof term !== 'number') return undefined;
    return { node: name, role, term, primary: typeof primary === 'string' ? primary : undefined };
  } catch {
    return undefined;
  }
}

/**
 * The one node that is up and says it is primary, with its term, once every node that is up and answers
 * agrees (a node that does not answer GET /v1/cluster within a second is left out: see `unresponsive`).
 */
export async function agreedPrimary(
  nodes: readonly ChaosNode[],
  deadline: Deadline,
  timeoutMs: number,
): Promise<{ node: ChaosNode; term: number } | undefined> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    deadline.check();
    const up = nodes.filter((node) => node.state === 'up');
    const views = (await Promise.all(up.map(clusterView))).filter((view) => view !== undefined);
    const primaries = views.filter((view) => view.role === 'primary');
    const [primary] = primaries;
    const agreed =
      primaries.length === 1 &&
      primary !== undefined &&
      views.every((view) => view.primary === primary.node && view.term === primary.term);
    const node = up.find((candidate) => candidate.name === primary?.node);
    if (agreed && node) return { node, term: primary.term };
    await pause(100, deadline.signal);
  }
  return undefined;
}

/** The nodes that are up but do not answer GET /v1/cluster within a second, three times in a row. */
export async function unresponsive(nodes: readonly ChaosNode[]): Promise<string[]> {
  const silent: string[] = [];
  for (const node of nodes.filter((candidate) => candidate.state === 'up')) {
    let answered = false;
    for (let attempt = 0; attempt < 3 && !answered; attempt++)
      answered = (await clusterView(node)) !== undefined;
    if (!answered) silent.push(node.name);
  }
  return silent;
}
