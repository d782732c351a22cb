// The checks at the end of the chaos run (bench/chaos.ts), each read from the store on the private
// PostgreSQL (directly, not through a node), the task output file and what the producers and listeners
// noted: records stored exactly once, events given to each named listener with none skipped and none
// repeated beyond its contract, one task run per triggering event, no overlap of primaries on the
// witness's single database clock, every tick of the schedule applied once with its term, and no delayed
// record run before its time.
import { readFile } from 'node:fs/promises';

import { Redis } from 'ioredis';

import type { Database } from './chaos-cluster.js';
import { openBatch } from '../src/queue/redis-batch.js';
import {
  CHAIN_NAMESPACE,
  EVENTS_NAMESPACE,
  REDIS_KEY,
  SCHEDULE,
  SCHEDULE_EVERY_MS,
  SCHEDULE_QUEUE,
} from './chaos-cluster.js';
import type { ChaosListener, EventProducer, Outcomes } from './chaos-load.js';
import type { Deadline } from './support.js';

export interface RecordCheck {
  readonly published: number;
  readonly unknown: number;
  /** Of the unknown ones, how many were stored (once). */
  readonly unknownStored: number;
  readonly stored: number;
  readonly lost: number;
  /** Ids stored more than once. */
  readonly duplicated: number;
  /** Ids stored that no producer sent. */
  readonly strays: number;
  /** Of the lost ones: where they still are in Baton's queues (waiting, claimed, to retry, errors). */
  readonly stillQueued: Record<string, number>;
  readonly examples: string[];
}

/** Counts each id of the sink against what the record producers noted. */
export async function checkRecords(
  db: Database,
  redisUrl: string,
  producers: readonly Outcomes[],
  deadline: Deadline,
): Promise<RecordCheck> {
  const rows = await db.rows('SELECT id, count(*)::int AS n FROM chaos_sink GROUP BY id', [], deadline);
  const counts = new Map<string, number>(rows.map((row) => [String(row['id']), Number(row['n'])]));
  const acked = new Set(producers.flatMap((outcomes) => outcomes.acked));
  const unknown = new Set(producers.flatMap((outcomes) => outcomes.unknown));
  const examples: string[] = [];
  const note = (text: string): void => void (examples.length < 10 && examples.push(text));
  const missing: string[] = [];
  let duplicated = 0;
  let strays = 0;
  let unknownStored = 0;
  for (const id of acked) {
    if ((counts.get(id) ?? 0) === 0) missing.push(id);
  }
  for (const [id, n] of counts) {
    if (n > 1) {
      duplicated++;
      note(`${id}: stored ${n} times`);
    }
    if (unknown.has(id)) unknownStored++;
    else if (!acked.has(id)) {
      strays++;
      note(`${id}: stored, never sent`);
    }
  }
  const stored = [...counts.values()].reduce((sum, n) => sum + n, 0);
  const places = await locate(db, redisUrl, deadline);
  const stillQueued: Record<string, number> = {};
  for (const id of missing) {
    const place = places.get(id) ?? 'nowhere in the queues';
    stillQueued[place] = (stillQueued[place] ?? 0) + 1;
    note(`${id}: acknowledged, not stored (${place})`);
  }
  return {
    published: acked.size,
    unknown: unknown.size,
    unknownStored,
    stored,
    lost: missing.length,
    duplicated,
    strays,
    stillQueued,
    examples,
  };
}

/** Where each record still waiting in Baton's queues is: id → a place (a Redis key, or a table and state). */
async function locate(db: Database, redisUrl: string, deadline: Deadline): Promise<Map<string, string>> {
  const places = new Map<string, string>();
  const rows = await db.rows(
    `SELECT split_part(convert_from(payload, 'UTF8'), ' ', 1) AS id,
            CASE WHEN claimed_by IS NULL THEN 'pq: waiting in baton_queue_records'
                 ELSE 'pq: claimed by ' || claimed_by END AS place
       FROM baton_queue_records
      WHERE queue <> '${SCHEDULE_QUEUE}'
     UNION ALL SELECT split_part(convert_from(payload, 'UTF8'), ' ', 1), 'pq: in the error queue'
       FROM baton_queue_errors`,
    [],
    deadline,
  );
  for (const row of rows) places.set(String(row['id']), String(row['place']));
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  try {
    for (const key of [REDIS_KEY, 'errors-rq']) {
      for (const id of await redis.lrange(key, 0, -1)) places.set(id.split(' ')[0] ?? id, `rq: in ${key}`);
    }
    // A claimed batch is one value under its processing key (src/queue/redis-batch.ts).
    for (const key of await redis.keys(`${REDIS_KEY}:processing:*`)) {
      const value = await redis.getBuffer(key);
      if (!value) continue;
      const given = openBatch(value);
      given.payloads.forEach((payload, index) => {
        const state = given.attempts[index] === -1 ? 'given back' : 'claimed';
        places.set(
          payload.toString('utf8').split(' ')[0] ?? '',
          `rq: ${state} in ${key.split(':').slice(0, 3).join(':')}`,
        );
      });
    }
    // Records waiting for a retry: members of a sorted set, the record inside each member.
    for (const member of await redis.zrange(`${REDIS_KEY}:retry`, 0, -1)) {
      const id = /[rpd]\d+(?= |$)/.exec(member)?.[0];
      if (id) places.set(id, `rq: in ${REDIS_KEY}:retry`);
    }
  } catch (error) {
    places.set('?', `Redis could not be read: ${String(error)}`);
  } finally {
    redis.disconnect();
  }
  return places;
}

export interface EventCheck {
  readonly sent: number;
  readonly unknown: number;
  /** Acknowledged events not in the log. */
  readonly lost: number;
  /** Events (by their unique value) stored more than once. */
  readonly storedTwice: number;
  readonly listeners: ListenerCheck[];
}

export interface ListenerCheck {
  readonly name: string;
  readonly keys: readonly string[];
  readonly registrations: number;
  /** Offsets of its keys in the log after the offset it started from. */
  readonly expected: number;
  readonly seen: number;
  readonly skipped: number;
  readonly repeated: number;
  readonly redeliveredAllowed: number;
  readonly warnings: number;
  readonly examples: string[];
}

/** The events producer's acknowledged events against the log, and each listener against the log. */
export async function checkEvents(
  db: Database,
  producer: EventProducer,
  listeners: readonly ChaosListener[],
  deadline: Deadline,
): Promise<EventCheck> {
  const rows = await db.rows(
    'SELECT value, count(*)::int AS n FROM baton_events WHERE namespace = $1 GROUP BY value',
    [EVENTS_NAMESPACE],
    deadline,
  );
  const counts = new Map<string, number>(rows.map((row) => [String(row['value']), Number(row['n'])]));
  const lost = producer.outcomes.acked.filter((value) => (counts.get(value) ?? 0) === 0).length;
  const storedTwice = [...counts.values()].filter((n) => n > 1).length;
  const checks: ListenerCheck[] = [];
  for (const listener of listeners) {
    const expected = await expectedOffsets(db, listener, deadline);
    const seen = listener.seen;
    const missing = expected.filter((offset) => !seen.has(offset));
    checks.push({
      name: listener.name,
      keys: listener.keys,
      registrations: listener.registrations,
      expected: expected.length,
      seen: seen.size,
      skipped: missing.length,
      repeated: listener.repeatedWrong,
      redeliveredAllowed: listener.redeliveredAllowed,
      warnings: listener.log.warnings,
      examples: [
        ...missing.slice(0, 5).map((offset) => `offset ${offset} never given`),
        ...listener.wrongExamples,
      ],
    });
  }
  return {
    sent: producer.outcomes.acked.length,
    unknown: producer.outcomes.unknown.length,
    lost,
    storedTwice,
    listeners: checks,
  };
}

export function expectedOffsets(
  db: Database,
  listener: ChaosListener,
  deadline: Deadline,
): Promise<number[]> {
  return db
    .rows(
      'SELECT "offset" FROM baton_events WHERE namespace = $1 AND key = ANY($2) AND "offset" > $3 ORDER BY "offset"',
      [EVENTS_NAMESPACE, listener.keys, listener.startedAfter],
      deadline,
    )
    .then((rows) => rows.map((row) => Number(row['offset'])));
}

export interface ChainCheck {
  readonly triggers: number;
  /** Triggers whose chain ran A once and B once. */
  readonly complete: number;
  /** Triggers that broke a rule: a task run twice or never started, a success without its work, an event twice. */
  readonly wrong: number;
  /** Runs marked lost (their node was killed, paused or cut off while they ran), with and without their work done. */
  readonly lostWithoutWork: number;
  readonly lostAfterWork: number;
  readonly failed: number;
  /** Triggers whose chain stopped after A because A could not send its event (its node went away). */
  readonly cut: number;
  readonly examples: string[];
}

interface RunRow {
  readonly id: string;
  readonly task: string;
  readonly state: string;
  readonly triggerOffset: number;
  readonly error: string;
}

/** Each chain.start against the task runs, the chain.a.done events and the lines the tasks appended. */
export async function checkChain(db: Database, chainFile: string, deadline: Deadline): Promise<ChainCheck> {
  const events = await db.rows(
    'SELECT "offset", key, value FROM baton_events WHERE namespace = $1 AND key IN ($2, $3) ORDER BY "offset"',
    [CHAIN_NAMESPACE, 'chain.start', 'chain.a.done'],
    deadline,
  );
  const runs: RunRow[] = (
    await db.rows(
      'SELECT id, task, state, trigger_offset, error FROM baton_task_runs WHERE execution IS NULL',
      [],
      deadline,
    )
  ).map((row) => ({
    id: String(row['id']),
    task: String(row['task']),
    state: String(row['state']),
    triggerOffset: Number(row['trigger_offset']),
    error: typeof row['error'] === 'string' ? row['error'] : '',
  }));
  const lines = new Map<string, number>();
  const text = await readFile(chainFile, 'utf8').catch(() => '');
  for (const line of text.split('\n').filter((entry) => entry.length > 0)) {
    lines.set(line, (lines.get(line) ?? 0) + 1);
  }
  const runsOf = (task: string, offset: number): RunRow[] =>
    runs.filter((run) => run.task === task && run.triggerOffset === offset);
  const linesOf = (letter: string, run: RunRow): number => lines.get(`${letter} ${run.id}`) ?? 0;
  const starts = events.filter((event) => event['key'] === 'chain.start');
  const done = events.filter((event) => event['key'] === 'chain.a.done');
  const result = {
    triggers: starts.length,
    complete: 0,
    wrong: 0,
    lostWithoutWork: 0,
    lostAfterWork: 0,
    failed: 0,
    cut: 0,
    examples: [] as string[],
  };
  const countRun = (letter: string, run: RunRow): void => {
    if (run.state === 'lost') {
      if (linesOf(letter, run) === 0) result.lostWithoutWork++;
      else result.lostAfterWork++;
    } else if (run.state === 'failed') result.failed++;
  };
  /** Why the run of `letter` is wrong, or undefined when it kept the rule. */
  const problem = (letter: string, found: readonly RunRow[]): string | undefined => {
    const [run] = found;
    if (found.length !== 1 || !run) return `${found.length} runs of ${letter}`;
    countRun(letter, run);
    const work = linesOf(letter, run);
    if (work > 1) return `${letter} did its work ${work} times (run ${run.id}, ${run.state})`;
    if (run.state === 'pending' || run.state === 'running') return `${letter} still ${run.state} at the end`;
    if (work === 0 && run.state === 'succeeded') return `${letter} succeeded without doing its work`;
    return undefined;
  };
  for (const start of starts) {
    const offset = Number(start['offset']);
    const trigger = `chain.start ${String(start['value'])} (offset ${offset})`;
    const fail = (why: string): void => {
      result.wrong++;
      if (result.examples.length < 10) result.examples.push(`${trigger}: ${why}`);
    };
    const aRuns = runsOf('a', offset);
    const aProblem = problem('A', aRuns);
    if (aProblem) {
      fail(aProblem);
      continue;
    }
    const aRun = aRuns[0] as RunRow;
    const sent = done.filter((event) => event['value'] === aRun.id);
    if (sent.length > 1) {
      fail(`chain.a.done stored ${sent.length} times`);
      continue;
    }
    const [doneEvent] = sent;
    if (!doneEvent) {
      if (aRun.state === 'succeeded') fail('A succeeded but its chain.a.done is not in the log');
      else result.cut++;
      continue;
    }
    const bProblem = problem('B', runsOf('b', Number(doneEvent['offset'])));
    if (bProblem) fail(bProblem);
    else if (
      linesOf('A', aRun) === 1 &&
      linesOf('B', runsOf('b', Number(doneEvent['offset']))[0] as RunRow) === 1
    )
      result.complete++;
  }
  return result;
}

/**
 * Whether no task run of the chain (outside workflows) is pending or running, and every trigger has its run
 * (the chain settled).
 */
export async function chainSettled(db: Database, deadline: Deadline): Promise<boolean> {
  const [row] = await db.rows(
    `SELECT
       (SELECT count(*) FROM baton_task_runs WHERE state IN ('pending', 'running') AND execution IS NULL)::int
         AS open,
       (SELECT count(*) FROM baton_events e WHERE e.namespace = $1 AND e.key IN ('chain.start', 'chain.a.done')
          AND NOT EXISTS (SELECT 1 FROM baton_task_runs r WHERE r.trigger_offset = e."offset"))::int AS waiting`,
    [CHAIN_NAMESPACE],
    deadline,
  );
  return Number(row?.['open']) === 0 && Number(row?.['waiting']) === 0;
}

export interface WitnessCheck {
  readonly rows: number;
  readonly terms: number;
  /** Pairs of terms (lower, higher) where the lower one wrote after the higher one's first row. */
  readonly overlaps: number;
  /** Terms written by more than one node. */
  readonly sharedTerms: number;
  readonly examples: string[];
}

export async function checkWitness(db: Database, deadline: Deadline): Promise<WitnessCheck> {
  const [totals] = await db.rows(
    'SELECT count(*)::int AS rows, count(DISTINCT term)::int AS terms FROM chaos_witness',
    [],
    deadline,
  );
  const overlaps = await db.rows(
    `WITH firsts AS (SELECT term, min(at) AS first FROM chaos_witness GROUP BY term)
     SELECT w.term AS lower, f.term AS higher, count(*)::int AS rows,
            round(extract(epoch FROM max(w.at) - f.first) * 1000)::int AS late_ms
       FROM chaos_witness w JOIN firsts f ON f.term > w.term AND w.at > f.first
      GROUP BY w.term, f.term, f.first ORDER BY w.term, f.term`,
    [],
    deadline,
  );
  const shared = await db.rows(
    `SELECT term, string_agg(DISTINCT node, ', ') AS nodes FROM chaos_witness
      GROUP BY term HAVING count(DISTINCT node) > 1`,
    [],
    deadline,
  );
  return {
    rows: Number(totals?.['rows'] ?? 0),
    terms: Number(totals?.['terms'] ?? 0),
    overlaps: overlaps.length,
    sharedTerms: shared.length,
    examples: [
      ...overlaps.map(
        (row) =>
          `term ${String(row['lower'])} wrote ${String(row['rows'])} rows after term ${String(row['higher'])} began ` +
          `(the last ${String(row['late_ms'])} ms after)`,
      ),
      ...shared.map((row) => `term ${String(row['term'])} written by ${String(row['nodes'])}`),
    ],
  };
}

export interface DelayedCheck {
  readonly published: number;
  /** Rows of delayed records whose ran_at (the database's clock) is before their run_at. */
  readonly early: number;
  /** Acknowledged delayed records not in the sink. */
  readonly lost: number;
  /** Of the rows, how late after run_at they ran: p50 and max (ms). */
  readonly lateP50Ms: number | null;
  readonly lateMaxMs: number | null;
  readonly examples: string[];
}

/**
 * The delayed records (those published with a run_at) against the sink: each ran at or after its run_at by
 * the database's clock (clock_timestamp() in the handler's transaction, taken after the claim), and each
 * acknowledged one ran. The run_at given is what decides on both queues: on `pq` the database compares it
 * with its `now()`; on `rq` the claiming node compares it with its clock, which is this host's clock too.
 */
export async function checkDelayed(
  db: Database,
  producer: Outcomes,
  deadline: Deadline,
): Promise<DelayedCheck> {
  const rows = await db.rows(
    `SELECT id, to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS run_at,
            to_char(ran_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS ran_at,
            (extract(epoch FROM ran_at - run_at) * 1000)::float8 AS late_ms
       FROM chaos_sink WHERE run_at IS NOT NULL ORDER BY late_ms`,
    [],
    deadline,
  );
  const ran = new Set(rows.map((row) => String(row['id'])));
  const lateness = rows.map((row) => Number(row['late_ms']));
  const examples: string[] = [];
  const early = rows.filter((row) => Number(row['late_ms']) < 0);
  for (const row of early.slice(0, 5))
    examples.push(`${String(row['id'])}: due ${String(row['run_at'])}, ran ${String(row['ran_at'])}`);
  const lost = producer.acked.filter((id) => !ran.has(id));
  for (const id of lost.slice(0, 5)) examples.push(`${id}: acknowledged, never ran`);
  return {
    published: producer.acked.length,
    early: early.length,
    lost: lost.length,
    lateP50Ms: lateness.length > 0 ? Math.round(lateness[Math.floor(lateness.length / 2)] ?? 0) : null,
    lateMaxMs: lateness.length > 0 ? Math.round(lateness.at(-1) ?? 0) : null,
    examples,
  };
}

export interface TickCheck {
  /** Tick times from the first applied tick to the last one checked. */
  readonly window: number;
  /** Rows of the ticks table in the window. */
  readonly applied: number;
  /** Ticks of the window without a row, or with a row but no effect in the sink. */
  readonly missed: number;
  /** Effects beyond the first for a tick. */
  readonly duplicated: number;
  /** Effects whose term is not their tick row's (or without a tick row), and tick rows whose term is
   * lower than an earlier tick's. */
  readonly termMismatch: number;
  /** Ticks the nodes counted as missed on a catch-up (baton_schedule_state), for information. */
  readonly countedMissed: number;
  readonly catchUps: number;
  readonly examples: string[];
}

/** Ticks this recent are left out: their effect may still be on its way through the queue. */
const TICK_SETTLE_MS = 10_000;

/**
 * The schedule (every 1 s, missed = "all") from its ticks table and its effects: every tick time from the
 * first applied tick to the last one older than 10 s has one row and one effect, each effect with its row's
 * term, and terms never go down in tick order.
 */
export async function checkTicks(db: Database, deadline: Deadline): Promise<TickCheck> {
  const iso = (ms: number): string => new Date(ms).toISOString();
  const ticks = await db.rows(
    `SELECT (extract(epoch FROM tick_time) * 1000)::float8 AS tick_ms, term, cause FROM baton_schedule_ticks
      WHERE schedule = $1 AND tick_time <= now() - make_interval(secs => $2) ORDER BY tick_time`,
    [SCHEDULE, TICK_SETTLE_MS / 1000],
    deadline,
  );
  const effects = await db.rows(
    `SELECT (extract(epoch FROM tick) * 1000)::float8 AS tick_ms, term, count(*)::int AS n
       FROM chaos_tick_effects WHERE schedule = $1 GROUP BY tick, term`,
    [SCHEDULE],
    deadline,
  );
  const [state] = await db.rows(
    'SELECT missed::int AS missed FROM baton_schedule_state WHERE schedule = $1',
    [SCHEDULE],
    deadline,
  );
  const examples: string[] = [];
  const note = (text: string): void => void (examples.length < 10 && examples.push(text));
  const termOf = new Map<number, number>(ticks.map((row) => [Number(row['tick_ms']), Number(row['term'])]));
  const effectsOf = new Map<number, number>();
  let duplicated = 0;
  let termMismatch = 0;
  for (const row of effects) {
    const tick = Number(row['tick_ms']);
    const n = Number(row['n']);
    effectsOf.set(tick, (effectsOf.get(tick) ?? 0) + n);
    const term = Number(row['term']);
    const rowTerm = termOf.get(tick);
    if (rowTerm !== undefined && rowTerm !== term) {
      termMismatch += n;
      note(`tick ${iso(tick)}: effect of term ${term}, row of term ${rowTerm}`);
    }
  }
  for (const [tick, n] of effectsOf) {
    if (n > 1) {
      duplicated += n - 1;
      note(`tick ${iso(tick)}: ${n} effects`);
    }
  }
  const first = Number(ticks[0]?.['tick_ms'] ?? 0);
  const last = Number(ticks.at(-1)?.['tick_ms'] ?? -1);
  // No tick applied at all is one missed tick: the schedule never ran.
  let missed = ticks.length === 0 ? 1 : 0;
  if (ticks.length === 0) note('no tick of the schedule was applied');
  let window = 0;
  for (let tick = first; tick <= last; tick += SCHEDULE_EVERY_MS) {
    window++;
    if (!termOf.has(tick)) {
      missed++;
      note(`tick ${iso(tick)}: no row`);
    } else if (!effectsOf.has(tick)) {
      missed++;
      note(`tick ${iso(tick)}: a row (term ${termOf.get(tick)}) but no effect`);
    }
  }
  // Effects without a row cannot be (one transaction), unless the row is recent: only older ones count.
  for (const tick of effectsOf.keys()) {
    if (tick <= last && !termOf.has(tick)) {
      termMismatch++;
      note(`tick ${iso(tick)}: an effect without a row`);
    }
  }
  let highest = 0;
  for (const row of ticks) {
    const term = Number(row['term']);
    if (term < highest) {
      termMismatch++;
      note(`tick ${iso(Number(row['tick_ms']))}: term ${term} after term ${highest}`);
    }
    highest = Math.max(highest, term);
  }
  return {
    window,
    applied: ticks.length,
    missed,
    duplicated,
    termMismatch,
    countedMissed: Number(state?.['missed'] ?? 0),
    catchUps: ticks.filter((row) => row['cause'] === 'catch-up').length,
    examples,
  };
}
