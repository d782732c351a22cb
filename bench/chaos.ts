// `npm run chaos [-- --minutes 8 --seed N --rate 100 --faults kill,redis-key]`: a bounded chaos run (it stops
// by itself within --minutes, at most 10, checks included). Three node processes (postgres elector, lease
// 2000 ms) on a private PostgreSQL and a private Redis, with steady load, while faults are injected at random
// from a seed: kill -9 of a node, SIGSTOP/SIGCONT of the primary, a Redis restart, a PostgreSQL restart, one
// node's PostgreSQL connections black-holed by its TCP proxy, a key of the Redis queue holding the wrong type
// for a few seconds (--faults draws from the kinds named; default all). Then it checks and prints, and ends
// with one JSON line.
//
// The load:
// - Queue `rq` (Redis): ids "r0", "r1"… LPUSHed straight to Redis, as Azafea's producers do. Queue `pq`
//   (store): ids "p0"… POSTed as NDJSON to a node that is up. Both handlers insert into `chaos_sink`, which
//   has no unique constraint: a record applied twice shows in count(*) against count(DISTINCT id). A record
//   is "published" when acknowledged (the LPUSH script answered; 202); a POST that failed midway leaves its
//   records "unknown" (stored 0 or 1 times, never twice; never resent).
// - Delayed records: ids "d0"… POSTed as envelopes (Baton-Envelope: json) to `pq` and `rq` in turn, a
//   quarter of --rate, each line with a run_at 0–5 s ahead, also written in the record ("d7 <run_at>"). The
//   sink notes run_at and when the record ran by the database's clock (clock_timestamp(), after the claim).
//   Early: a row whose ran_at is before its run_at (no slack: docs/delayed-records.md promises none; on
//   `rq` the nodes' clocks decide, and they are this host's clock). They count in lost/duplicated too.
// - A schedule `beat`, every 1 s with missed = "all", publishing to the store queue `sq`, whose handler
//   (bench/chaos-fixtures/tick-handler.ts) notes each effect's tick and term. From the first tick row to the
//   last one older than 10 s, every tick must have one row in baton_schedule_ticks and one effect, the
//   effect with its row's term; terms never go down in tick order.
// - Events "tick.a"/"tick.b" in namespace `chaos` from a NotificationClient (idempotent clientId/seq), to
//   whichever node answers (the transport moves to the next node on a failure). Two named listeners in this
//   process: `chaos-l1` on tick.a, `chaos-l2` on both; `chaos-l2` is also unregistered and registered again
//   under its name every 30–50 s, as a restarted listener process would be, to exercise the offset stored on
//   the node. Skipped: an offset of its keys in the log after where it started that it never got. Repeated:
//   an offset given twice within one registration, or given again after a re-registration although it is at
//   or before the offset stored on the node when it registered again. A listener is at-least-once, so an
//   offset after that stored offset that it had processed before may come again: counted as allowed.
// - A chain of rules: "chain.start" (unique values, every 2 s) → task a (appends "A <run id>" to a file, then
//   sends chain.a.done with its run id to its node with curl, idempotently) → task b (appends "B <run id>").
//   Rules have on_lost = "mark": each triggering event starts its task at most once (docs/tasks.md). Wrong:
//   a trigger without exactly one run, work done twice, a success without its work, an event stored twice.
//   Runs marked lost (their node killed, paused or cut off while they ran) and chains cut because task a
//   could not reach its node are the documented windows: counted and printed, not wrong.
// - A workflow `flow` (namespace `flow`, max_concurrent 3, over_limit = "queue"), triggered by "flow.start"
//   (unique values, every 2 s) and by every tick of `beat`: split → left, split → right, (left, right) →
//   merge, each appending "<task> <execution> <run id>" to a file (left and right then sleep 0.3 s); every
//   task but left has on_lost = "restart". Wrong: a triggering event (by offset, or by its value: the load's
//   unique value, the tick's time) with more than one execution; one up to the log's head when the load
//   stopped without an execution, or whose execution has not ended by the checks; an execution succeeded
//   without a succeeded run of each task; within an execution, a task started twice for one event (one
//   (execution, task, trigger offset, attempt) with two runs), a task with two first attempts, or a restart
//   of left; a run succeeded without its line. Executions lost (left lost) and queued, runs lost and
//   restarted are counted and printed.
// - Ordered queues (ordering = "key") `kq` (store) and `krq` (Redis), 16 keys each (bench/chaos-keys.ts):
//   each key publishes 1–3 records with increasing seqs at a time through a node that is up (a header
//   request with Baton-Key and Idempotency-Key, envelope lines, or the HTTP admin client, by key), sends the
//   same request with the same ids to the next node until one acknowledges it (some first attempts are
//   abandoned after a few ms, and may be stored all the same), then the next, so that a key's publish order
//   is its seq order. A tenth of acknowledged requests are sent again at once, and some earlier ones later:
//   all must be dropped (dedup_window_ms covers the run). The handler
//   (bench/chaos-fixtures/keyed-sink-handler.ts) stores (queue, key, seq, id) in commit order; a few records
//   fail every run for their first second, holding their key back. Out of order: a record stored after a
//   higher seq of its key. Also counted: rows beyond a record's first, acknowledged records not stored, rows
//   never sent, and resends answered 202 beyond the nodes' count of deduplicated records.
// - Overlapping primaries: the primary-only component bench/chaos-fixtures/witness.ts writes (node, term,
//   clock_timestamp()) every 20 ms in a transaction that first calls ctx.assertPrimary(tx). On the one
//   database clock, a row of a lower term stamped after the first row of a higher term is a write that the
//   fence let through from a deposed primary: an overlap. The reigns rebuilt from the nodes' `role` log lines
//   are printed too, for information: a paused primary logs its step-down only after SIGCONT, so those
//   intervals overlap by design (guarantees.md: the fence, not the node's belief, keeps writes single).
// - Failover times: for a fault that hits the primary (kill -9, SIGSTOP, black hole), from the injection
//   (Date.now() here) to the first witness row of a newer term (clock_timestamp() of the database). Both
//   read the same host's clock; the witness adds up to 20 ms.
// At the end: producers stop, the run waits (bounded) for queues to drain, listeners to catch up and task
// runs to settle and the executions of the workflow's triggers up to then to end, then 5 s more so that
// recovered claims of killed nodes would show as duplicates. Exit 1 when lost, duplicated, events_skipped,
// events_repeated, task_runs_wrong, overlapping_primaries, missed_ticks, duplicated_ticks,
// tick_term_mismatch, delayed_early, delayed_lost, executions_twice, executions_missing, executions_unended,
// executions_incomplete, tasks_twice_in_execution, workflow_runs_without_work, keyed_out_of_order,
// dedup_duplicated, keyed_missing, keyed_never_sent or dedup_uncounted (or events lost or stored twice,
// records stored without being sent, a node exiting on its own) is not zero.
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { Redis } from 'ioredis';

import type { PrivatePostgres, PrivateRedis } from '../test/support/private-services.js';
import { startPrivatePostgres, startPrivateRedis } from '../test/support/private-services.js';
import type {
  ChainCheck,
  DelayedCheck,
  EventCheck,
  RecordCheck,
  TickCheck,
  WitnessCheck,
} from './chaos-checks.js';
import {
  chainSettled,
  checkChain,
  checkDelayed,
  checkEvents,
  checkRecords,
  checkTicks,
  checkWitness,
  expectedOffsets,
} from './chaos-checks.js';
import {
  agreedPrimary,
  ChaosNode,
  Database,
  REDIS_KEY,
  SCHEDULE_QUEUE,
  unresponsive,
} from './chaos-cluster.js';
import type { Fault, FaultKind } from './chaos-faults.js';
import { FAULT_KINDS, injectFaults, Random } from './chaos-faults.js';
import type { EventProducer } from './chaos-load.js';
import {
  ChaosListener,
  chainProducer,
  flowProducer,
  RedisProducer,
  StoreProducer,
  tickProducer,
} from './chaos-load.js';
import type { KeyedCheck } from './chaos-keys.js';
import { checkKeyed, describeKeyed, KeyedLoad, keyedSummary, keyedWaiting } from './chaos-keys.js';
import type { WorkflowCheck } from './chaos-workflows.js';
import { checkWorkflow, logHead, workflowWaiting } from './chaos-workflows.js';
import { findOverlaps, GroupLog, percentile, rebuildReigns } from './failover-support.js';
import {
  Deadline,
  DeadlineError,
  describeMachine,
  formatMachine,
  freePort,
  parseOptions,
  pause,
  ROOT,
  UsageError,
} from './support.js';

const NAME = 'chaos';
const MAX_MINUTES = 10;
/** Kept at the end of the time for stopping the nodes and servers and removing the folders. */
const CLEANUP_MS = 20_000;
/** Kept before the end for draining and checking: the faults and the load stop this long before it. */
const DRAIN_AND_CHECK_MS = 100_000;
/** Time kept for the checks themselves, out of DRAIN_AND_CHECK_MS. */
const CHECK_MS = 15_000;
const TICK_MS = 250;
const EVENT_EVERY_MS = 100;
const CHAIN_EVERY_MS = 2000;
const FLOW_EVERY_MS = 2000;
/** Delayed records: a quarter of --rate, each due 0 to 5 s after it is sent. */
const DELAYED_SHARE = 4;
const MAX_DELAY_MS = 5000;

interface Settings {
  readonly minutes: number;
  readonly seed: number;
  readonly rate: number;
  readonly kinds: readonly FaultKind[];
}

interface Outcome {
  faults: Fault[];
  records?: RecordCheck;
  events?: EventCheck;
  chain?: ChainCheck;
  witness?: WitnessCheck;
  delayed?: DelayedCheck;
  ticks?: TickCheck;
  workflow?: WorkflowCheck;
  keyed?: KeyedCheck;
  crashes: string[];
  logOverlaps: string[];
  reigns: number;
  drained: string[];
  unresponsive: string[];
}

export async function main(args: readonly string[]): Promise<number> {
  const settings = readSettings(args);
  const startedAt = Date.now();
  const deadline = new Deadline(settings.minutes * 60_000 - CLEANUP_MS);
  const interrupted = { yes: false };
  const onSignal = (): void => {
    interrupted.yes = true;
    deadline.cancel();
  };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  const print = (line: string): void => void process.stdout.write(`${line}\n`);
  const outcome: Outcome = {
    faults: [],
    crashes: [],
    logOverlaps: [],
    reigns: 0,
    drained: [],
    unresponsive: [],
  };
  const cleanups: Array<() => Promise<unknown>> = [];
  const nodes: ChaosNode[] = [];
  const killAll = (): void => nodes.forEach((node) => node.killNow());
  process.on('exit', killAll);
  let failure: string | undefined;
  try {
    print(
      `${NAME}: seed ${settings.seed} (repeat with --seed ${settings.seed}), ${settings.minutes} min, ${settings.rate} records/s per queue, faults ${settings.kinds.join(',')}`,
    );
    print(formatMachine(describeMachine()));
    print(`load average at start: ${loadAverage()}`);
    print(await buildNote());
    await run(settings, startedAt, deadline, outcome, nodes, cleanups, print);
  } catch (error) {
    failure = interrupted.yes
      ? 'INTERRUPTED'
      : error instanceof DeadlineError
        ? `TIMEOUT: not finished within ${settings.minutes} min`
        : `FAILED: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`;
  } finally {
    deadline.dispose();
    await Promise.all(nodes.map((node) => node.stop().catch(() => node.killNow())));
    for (const cleanup of cleanups.reverse()) {
      await cleanup().catch((error: unknown) => print(`cleanup failed: ${String(error)}`));
    }
    process.off('exit', killAll);
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
  print(`load average at end: ${loadAverage()}; ran ${Math.round((Date.now() - startedAt) / 1000)} s`);
  const json = report(settings, outcome, print);
  if (failure) print(`${failure}; the figures above are partial`);
  print(JSON.stringify(json));
  const mustBeZero = [
    json.lost,
    json.duplicated,
    json.events_skipped,
    json.events_repeated,
    json.task_runs_wrong,
    json.overlapping_primaries,
    json.records_never_sent,
    json.events_lost,
    json.events_stored_twice,
    json.node_exits,
    json.missed_ticks,
    json.duplicated_ticks,
    json.tick_term_mismatch,
    json.delayed_early,
    json.delayed_lost,
    json.executions_twice,
    json.executions_missing,
    json.executions_unended,
    json.executions_incomplete,
    json.tasks_twice_in_execution,
    json.workflow_runs_without_work,
    json.keyed_out_of_order,
    json.dedup_duplicated,
    json.keyed_missing,
    json.keyed_never_sent,
    json.dedup_uncounted,
  ];
  return failure !== undefined || mustBeZero.some((count) => count !== 0) ? 1 : 0;
}

function readSettings(args: readonly string[]): Settings {
  const options = parseOptions(args, ['minutes', 'seed', 'rate', 'faults']);
  const minutes = Number(options.get('minutes') ?? 8);
  if (!Number.isFinite(minutes) || minutes < 3 || minutes > MAX_MINUTES) {
    throw new UsageError(
      `--minutes expects a number from 3 to ${MAX_MINUTES}, got ${options.get('minutes')}`,
    );
  }
  const seedText = options.get('seed');
  const seed = seedText === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(seedText);
  if (!Number.isSafeInteger(seed) || seed < 0)
    throw new UsageError(`--seed expects an integer >= 0, got ${seedText}`);
  const rate = Number(options.get('rate') ?? 100);
  if (!Number.isInteger(rate) || rate < 4 || rate > 5000) {
    throw new UsageError(
      `--rate expects records per second per queue, 4 to 5000, got ${options.get('rate')}`,
    );
  }
  const named = options.get('faults')?.split(',') ?? [...FAULT_KINDS];
  const kinds = FAULT_KINDS.filter((kind) => named.includes(kind));
  const unknown = named.filter((name) => !FAULT_KINDS.some((kind) => kind === name));
  if (unknown.length > 0 || kinds.length === 0) {
    throw new UsageError(
      `--faults expects kinds among ${FAULT_KINDS.join(', ')}, got ${options.get('faults')}`,
    );
  }
  return { minutes, seed, rate, kinds };
}

async function run(
  settings: Settings,
  startedAt: number,
  deadline: Deadline,
  outcome: Outcome,
  nodes: ChaosNode[],
  cleanups: Array<() => Promise<unknown>>,
  print: (line: string) => void,
): Promise<void> {
  const random = new Random(settings.seed);
  const dir = await mkdtemp(join(os.tmpdir(), 'baton-chaos-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const postgres: PrivatePostgres = await startPrivatePostgres();
  cleanups.push(() => postgres.dispose());
  const redis: PrivateRedis = await startPrivateRedis();
  cleanups.push(() => redis.dispose());
  const db = new Database(postgres.url);
  cleanups.push(() => db.close());
  await db.rows(
    `CREATE TABLE chaos_witness (node text NOT NULL, term bigint NOT NULL, at timestamptz NOT NULL);
     CREATE INDEX chaos_witness_term ON chaos_witness (term, at)`,
    [],
    deadline,
  );
  print(
    `private PostgreSQL on port ${postgres.port}, private Redis on port ${redis.port} (appendfsync always)`,
  );

  const log = new GroupLog();
  const chainFile = join(dir, 'chain.txt');
  const flowFile = join(dir, 'flow.txt');
  for (const name of ['n1', 'n2', 'n3']) {
    const node = await ChaosNode.create({
      dir,
      name,
      port: await freePort(),
      postgres,
      redis,
      chainFile,
      flowFile,
      log,
    });
    nodes.push(node);
    cleanups.push(() => node.proxy.close());
  }
  const [first, ...others] = nodes;
  await first?.start(deadline);
  await Promise.all(others.map((node) => node.start(deadline)));
  const primary = await agreedPrimary(nodes, deadline, 30_000);
  if (!primary) throw new Error('the group did not agree on a primary within 30 s of its start');
  print(
    `3 nodes up (${nodes.map((node) => `${node.name} :${node.port}`).join(', ')}); primary ${primary.node.name}, term ${primary.term}`,
  );

  const urls = nodes.map((node) => node.url);
  const listeners = [
    new ChaosListener('chaos-l1', ['tick.a'], urls),
    new ChaosListener('chaos-l2', ['tick.a', 'tick.b'], urls),
  ];
  for (const listener of listeners) await listener.register();
  cleanups.push(() => Promise.all(listeners.map((listener) => listener.close())));
  const perStep = Math.max(1, Math.round((settings.rate * TICK_MS) / 1000));
  const rq = new RedisProducer(redis.url, perStep, TICK_MS);
  const pq = new StoreProducer(nodes, perStep, TICK_MS);
  const delayRandom = new Random(settings.seed + 1);
  const dq = new StoreProducer(nodes, Math.max(1, Math.round(perStep / DELAYED_SHARE)), TICK_MS, {
    prefix: 'd',
    queues: ['pq', 'rq'],
    delays: { maxMs: MAX_DELAY_MS, random: () => delayRandom.next() },
  });
  const ticks: EventProducer = tickProducer(urls, EVENT_EVERY_MS);
  const chain: EventProducer = chainProducer(urls, CHAIN_EVERY_MS);
  const flow: EventProducer = flowProducer(urls, FLOW_EVERY_MS);
  const keyed = new KeyedLoad(nodes, new Random(settings.seed + 2));
  const producers = [rq, pq, dq, ticks, chain, flow, keyed];
  cleanups.push(() => Promise.all(producers.map((producer) => producer.stop())));
  producers.forEach((producer) => producer.start());

  const faultsEnd = startedAt + settings.minutes * 60_000 - CLEANUP_MS - DRAIN_AND_CHECK_MS;
  print(
    `load and faults until ${new Date(faultsEnd).toISOString()}; fault kinds: ${settings.kinds.join(', ')}`,
  );
  const watching = watchNodes(nodes, faultsEnd + DRAIN_AND_CHECK_MS, deadline, outcome, print);
  const reregistering = reregisterNow(listeners[1] as ChaosListener, random, faultsEnd, deadline);
  await injectFaults(
    { nodes, postgres, redis, db, random, deadline, print, kinds: settings.kinds },
    faultsEnd,
    outcome.faults,
  );
  await reregistering;
  await pause(Math.max(0, faultsEnd - Date.now()), deadline.signal);
  await Promise.all(producers.map((producer) => producer.stop()));
  print(
    `load stopped: rq ${rq.outcomes.acked.length} published, pq ${pq.outcomes.acked.length} published ` +
      `(${pq.outcomes.unknown.length} unknown), delayed ${dq.outcomes.acked.length} published ` +
      `(${dq.outcomes.unknown.length} unknown), ${ticks.outcomes.acked.length} events, ${chain.outcomes.acked.length} chain.start, ` +
      `${flow.outcomes.acked.length} flow.start, ${keyed.published} keyed (${keyed.unknown} unknown)`,
  );
  // The schedule keeps ticking: the executions of the triggers up to the log's head now must end.
  const cutoff = await logHead(db, deadline);

  const checksAt = startedAt + settings.minutes * 60_000 - CLEANUP_MS - CHECK_MS;
  outcome.drained = await drain(db, redis, [rq, pq, dq], keyed, listeners, cutoff, checksAt, deadline);
  await pause(Math.min(5000, Math.max(0, checksAt - Date.now())), deadline.signal);
  await watching.stop();
  outcome.unresponsive = await unresponsive(nodes);

  outcome.records = await checkRecords(db, redis.url, [rq.outcomes, pq.outcomes, dq.outcomes], deadline);
  outcome.delayed = await checkDelayed(db, dq.outcomes, deadline);
  outcome.ticks = await checkTicks(db, deadline);
  outcome.events = await checkEvents(db, ticks, listeners, deadline);
  outcome.chain = await checkChain(db, chainFile, deadline);
  outcome.workflow = await checkWorkflow(db, flow.outcomes, cutoff, flowFile, deadline);
  outcome.keyed = await checkKeyed(db, redis.url, nodes, keyed, deadline);
  outcome.witness = await checkWitness(db, deadline);
  const reigns = rebuildReigns(log, Date.now());
  outcome.reigns = reigns.length;
  outcome.logOverlaps = findOverlaps(reigns).map(
    ({ first, second, ms }) =>
      `${first.node} term ${first.term} (${first.end}) and ${second.node} term ${second.term} (${second.end}): ${ms} ms`,
  );
}

/**
 * Every second until `until`: a node that exited without being killed or stopped by the run is noted (a
 * node must never exit on its own) and started again, as is a node whose restart failed.
 */
function watchNodes(
  nodes: readonly ChaosNode[],
  until: number,
  deadline: Deadline,
  outcome: Outcome,
  print: (line: string) => void,
): { stop(): Promise<void> } {
  let stopped = false;
  const loop = (async () => {
    while (!stopped && Date.now() < until && !deadline.signal.aborted) {
      for (const node of nodes) {
        if (!node.crashed || node.state === 'starting') continue;
        const proc = node.run?.child.process;
        const line = `${node.name} exited on its own (${proc?.exitCode ?? proc?.signalCode}); last output:\n${node.run?.child.output() ?? ''}`;
        outcome.crashes.push(line);
        print(`  UNEXPECTED EXIT: ${line}`);
        await node
          .start(deadline)
          .catch((error: unknown) => print(`  restart of ${node.name} failed: ${String(error)}`));
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

/** Re-registers `listener` under its name every 30–50 s until `until`. */
async function reregisterNow(
  listener: ChaosListener,
  random: Random,
  until: number,
  deadline: Deadline,
): Promise<void> {
  for (;;) {
    const wait = random.between(30_000, 50_000);
    if (Date.now() + wait > until) return;
    await pause(wait, deadline.signal);
    await listener.reregister();
  }
}

/**
 * Waits until queues are empty (but `sq`, which the schedule feeds every second), acknowledged records stored
 * (delayed ones are due at most 5 s after the load stopped), listeners caught up, the chain settled and the
 * workflow's triggering events up to `cutoff` each with an ended execution.
 */
async function drain(
  db: Database,
  redis: PrivateRedis,
  producers: readonly (RedisProducer | StoreProducer)[],
  keyed: KeyedLoad,
  listeners: readonly ChaosListener[],
  cutoff: number,
  until: number,
  deadline: Deadline,
): Promise<string[]> {
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  client.on('error', () => undefined);
  const published = producers.reduce((sum, producer) => sum + producer.outcomes.acked.length, 0);
  let waiting: string[] = [];
  try {
    while (Date.now() < until) {
      waiting = [];
      const [row] = await db.rows(
        `SELECT (SELECT count(DISTINCT id) FROM chaos_sink)::int AS stored,
                (SELECT string_agg(queue || ' ' || n, ', ') FROM (SELECT queue, count(*) AS n
                   FROM baton_queue_records WHERE queue <> $1 GROUP BY queue) q) AS queued`,
        [SCHEDULE_QUEUE],
        deadline,
      );
      const listed = await client.llen(REDIS_KEY).catch(() => -1);
      const processing = await client.keys(`${REDIS_KEY}:processing:*`).catch(() => ['?']);
      const retrying = await client.zcard(`${REDIS_KEY}:retry`).catch(() => -1);
      if (Number(row?.['stored']) < published)
        waiting.push(`records (${String(row?.['stored'])} of ${published} stored)`);
      const queued = typeof row?.['queued'] === 'string' ? row['queued'] : undefined;
      if (queued !== undefined || listed !== 0 || processing.length > 0 || retrying !== 0) {
        waiting.push(
          `queues to be empty (store: ${queued ?? 'none'}; ${REDIS_KEY} ${listed}, processing ` +
            `${processing.length}, retry ${retrying})`,
        );
      }
      for (const listener of listeners) {
        const last = (await expectedOffsets(db, listener, deadline)).at(-1) ?? 0;
        if (listener.maxSeen < last) waiting.push(`${listener.name} (at ${listener.maxSeen} of ${last})`);
      }
      if (!(await chainSettled(db, deadline))) waiting.push('task runs to settle');
      waiting.push(...(await workflowWaiting(db, cutoff, deadline)));
      waiting.push(...(await keyedWaiting(db, redis.url, keyed, deadline)));
      if (waiting.length === 0) return [];
      await pause(500, deadline.signal);
    }
    return waiting;
  } finally {
    client.disconnect();
  }
}

interface Summary extends ReturnType<typeof keyedSummary> {
  bench: string;
  seed: number;
  faults: number;
  records: number;
  lost: number;
  duplicated: number;
  records_unknown: number;
  records_never_sent: number;
  events: number;
  events_lost: number;
  events_stored_twice: number;
  events_skipped: number;
  events_repeated: number;
  task_triggers: number;
  task_runs_wrong: number;
  task_runs_lost: number;
  overlapping_primaries: number;
  ticks: number;
  missed_ticks: number;
  duplicated_ticks: number;
  tick_term_mismatch: number;
  delayed: number;
  delayed_early: number;
  delayed_lost: number;
  workflow_triggers: number;
  executions: number;
  executions_succeeded: number;
  executions_failed: number;
  executions_lost: number;
  executions_stopped: number;
  executions_open: number;
  executions_queued: number;
  executions_twice: number;
  executions_missing: number;
  executions_unended: number;
  executions_incomplete: number;
  tasks_twice_in_execution: number;
  workflow_runs: number;
  workflow_runs_lost: number;
  workflow_runs_restarted: number;
  workflow_runs_without_work: number;
  node_exits: number;
  nodes_unresponsive: number;
  failovers: number;
  failover_p50_ms: number | null;
  failover_p99_ms: number | null;
  failover_max_ms: number | null;
}

/** Prints the human-readable report and returns the closing JSON line's fields. */
function report(settings: Settings, outcome: Outcome, print: (line: string) => void): Summary {
  const { records, events, chain, witness, delayed, ticks, workflow, faults } = outcome;
  print('');
  print(
    `faults: ${faults.length} (${FAULT_KINDS.map((kind) => `${kind} ${faults.filter((f) => f.kind === kind).length}`).join(', ')})`,
  );
  if (outcome.drained.length > 0) print(`NOT DRAINED before the checks: ${outcome.drained.join(', ')}`);
  if (records) {
    print(
      `records: ${records.published} published (acknowledged), ${records.stored} rows stored; lost ${records.lost}, ` +
        `duplicated ${records.duplicated}, stored but never sent ${records.strays}; ` +
        `${records.unknown} unknown (a request failed midway), of which ${records.unknownStored} stored once`,
    );
    for (const [place, count] of Object.entries(records.stillQueued))
      print(`  lost records ${place}: ${count}`);
    for (const example of records.examples) print(`  ${example}`);
  }
  if (events) {
    print(
      `events: ${events.sent} sent and acknowledged (${events.unknown} unknown); acknowledged but not in the log ${events.lost}; stored twice ${events.storedTwice}`,
    );
    for (const listener of events.listeners) {
      print(
        `  listener ${listener.name} [${listener.keys.join(', ')}], ${listener.registrations} registrations: ` +
          `${listener.expected} in the log, ${listener.seen} seen; skipped ${listener.skipped}, repeated ${listener.repeated}, ` +
          `given again within its contract ${listener.redeliveredAllowed}; ${listener.warnings} client warnings`,
      );
      for (const example of listener.examples) print(`    ${example}`);
    }
  }
  if (chain) {
    print(
      `task chain: ${chain.triggers} chain.start; complete (A once, B once) ${chain.complete}; WRONG ${chain.wrong}; ` +
        `runs lost before their work ${chain.lostWithoutWork}, lost after it ${chain.lostAfterWork}, failed ${chain.failed}; ` +
        `chains cut after A (its node went away before chain.a.done) ${chain.cut}`,
    );
    for (const example of chain.examples) print(`  ${example}`);
  }
  if (witness) {
    print(
      `primaries: ${witness.rows} witness rows over ${witness.terms} terms; overlaps (a lower term writing after a higher ` +
        `one began) ${witness.overlaps}; terms written by two nodes ${witness.sharedTerms}`,
    );
    for (const example of witness.examples) print(`  ${example}`);
  }
  if (delayed) {
    print(
      `delayed records: ${delayed.published} published (acknowledged); ran before their run_at ${delayed.early}, ` +
        `never ran ${delayed.lost}; late after run_at p50 ${delayed.lateP50Ms} ms, max ${delayed.lateMaxMs} ms`,
    );
    for (const example of delayed.examples) print(`  ${example}`);
  }
  if (ticks) {
    print(
      `schedule: ${ticks.window} ticks from the first applied one to the last checked, ${ticks.applied} rows ` +
        `(${ticks.catchUps} by a catch-up); missed ${ticks.missed}, duplicated ${ticks.duplicated}, term mismatches ` +
        `${ticks.termMismatch}; counted as missed by the nodes ${ticks.countedMissed}`,
    );
    for (const example of ticks.examples) print(`  ${example}`);
  }
  if (workflow) {
    const states = workflow.byState;
    print(
      `workflow: ${workflow.triggers} triggering events up to the load's end (flow.start, ticks); ` +
        `${workflow.executions} executions: succeeded ${states.succeeded}, lost ${states.lost}, failed ${states.failed}, ` +
        `stopped ${states.stopped}, open at the check ${states.queued + states.running} (ticks after the load stopped); ` +
        `${workflow.queued} waited in the queue; trigger to end p50 ${workflow.tookP50Ms} ms, max ` +
        `${workflow.tookMaxMs} ms. Twice ${workflow.twice}, missing ${workflow.missing}, ` +
        `not ended ${workflow.unended}, succeeded incomplete ${workflow.incomplete}; tasks started twice in an ` +
        `execution ${workflow.tasksTwice}; runs ${workflow.runs}, lost ${workflow.runsLost}, restarted ` +
        `${workflow.restarts}, succeeded without their work ${workflow.withoutWork}`,
    );
    for (const example of workflow.examples) print(`  ${example}`);
  }
  if (outcome.keyed) describeKeyed(outcome.keyed).forEach(print);
  print(
    `reigns from the nodes' logs: ${outcome.reigns}; intersecting (information: a paused primary logs its step-down ` +
      `only after SIGCONT) ${outcome.logOverlaps.length}`,
  );
  for (const overlap of outcome.logOverlaps.slice(0, 10)) print(`  ${overlap}`);
  const timed = faults.filter((fault) => fault.hitPrimary);
  const times = timed.flatMap((fault) => (fault.failoverMs === undefined ? [] : [fault.failoverMs]));
  const at = (p: number): number | null => percentile(times, p) ?? null;
  print(
    `failovers (injection → first witness row of a newer term): ${times.length} of ${timed.length} faults on the ` +
      `primary; p50 ${at(50)} ms, p99 ${at(99)} ms, max ${at(100)} ms`,
  );
  for (const kind of ['kill', 'pause', 'blackhole'] as const) {
    const own = timed.filter((fault) => fault.kind === kind).map((fault) => fault.failoverMs ?? 'none');
    if (own.length > 0) print(`  ${kind}: ${own.join(' ')} ms`);
  }
  const recoveries = faults.flatMap((fault) => (fault.recoveryMs === undefined ? [] : [fault.recoveryMs]));
  if (recoveries.length > 0) print(`  PostgreSQL restart → first witness row: ${recoveries.join(' ')} ms`);
  if (outcome.crashes.length > 0) print(`nodes that exited on their own: ${outcome.crashes.length}`);
  if (outcome.unresponsive.length > 0) {
    print(`nodes up but not answering GET /v1/cluster at the end: ${outcome.unresponsive.join(', ')}`);
  }
  const listenerSum = (field: 'skipped' | 'repeated'): number =>
    (events?.listeners ?? []).reduce((sum, listener) => sum + listener[field], 0);
  return {
    bench: NAME,
    seed: settings.seed,
    faults: faults.length,
    records: records?.published ?? 0,
    lost: records?.lost ?? 0,
    duplicated: records?.duplicated ?? 0,
    records_unknown: records?.unknown ?? 0,
    records_never_sent: records?.strays ?? 0,
    events: events?.sent ?? 0,
    events_lost: events?.lost ?? 0,
    events_stored_twice: events?.storedTwice ?? 0,
    events_skipped: listenerSum('skipped'),
    events_repeated: listenerSum('repeated'),
    task_triggers: chain?.triggers ?? 0,
    task_runs_wrong: chain?.wrong ?? 0,
    task_runs_lost: (chain?.lostWithoutWork ?? 0) + (chain?.lostAfterWork ?? 0),
    overlapping_primaries: (witness?.overlaps ?? 0) + (witness?.sharedTerms ?? 0),
    ticks: ticks?.window ?? 0,
    missed_ticks: ticks?.missed ?? 0,
    duplicated_ticks: ticks?.duplicated ?? 0,
    tick_term_mismatch: ticks?.termMismatch ?? 0,
    delayed: delayed?.published ?? 0,
    delayed_early: delayed?.early ?? 0,
    delayed_lost: delayed?.lost ?? 0,
    workflow_triggers: workflow?.triggers ?? 0,
    executions: workflow?.executions ?? 0,
    executions_succeeded: workflow?.byState.succeeded ?? 0,
    executions_failed: workflow?.byState.failed ?? 0,
    executions_lost: workflow?.byState.lost ?? 0,
    executions_stopped: workflow?.byState.stopped ?? 0,
    executions_open: (workflow?.byState.queued ?? 0) + (workflow?.byState.running ?? 0),
    executions_queued: workflow?.queued ?? 0,
    executions_twice: workflow?.twice ?? 0,
    executions_missing: workflow?.missing ?? 0,
    executions_unended: workflow?.unended ?? 0,
    executions_incomplete: workflow?.incomplete ?? 0,
    tasks_twice_in_execution: workflow?.tasksTwice ?? 0,
    workflow_runs: workflow?.runs ?? 0,
    workflow_runs_lost: workflow?.runsLost ?? 0,
    workflow_runs_restarted: workflow?.restarts ?? 0,
    workflow_runs_without_work: workflow?.withoutWork ?? 0,
    ...keyedSummary(outcome.keyed),
    node_exits: outcome.crashes.length,
    nodes_unresponsive: outcome.unresponsive.length,
    failovers: times.length,
    failover_p50_ms: at(50),
    failover_p99_ms: at(99),
    failover_max_ms: at(100),
  };
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((value) => value.toFixed(2))
    .join(' ');
}

/** The nodes run the compiled dist/: says when it was built, and warns when src/ changed after that. */
async function buildNote(): Promise<string> {
  const [built, edited] = await Promise.all([newestChange('dist'), newestChange('src')]);
  const note = `nodes run dist/ (built ${new Date(built).toISOString()})`;
  return edited > built ? `${note}\nWARNING: src/ changed after the build: run npm run build` : note;
}

async function newestChange(dir: string): Promise<number> {
  const names = await readdir(join(ROOT, dir), { recursive: true }).catch(() => []);
  const stats = await Promise.all(names.map((name) => stat(join(ROOT, dir, name)).catch(() => undefined)));
  return Math.max(0, ...stats.map((info) => (info?.isFile() ? info.mtimeMs : 0)));
}

const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  try {
    // Exits at once: a client still reconnecting to a server that is gone must not keep the run alive.
    process.exit(await main(process.argv.slice(2)));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${NAME}: ${error.message}\n`);
    process.exit(2);
  }
}
