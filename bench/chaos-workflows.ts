// The workflow checks of the chaos run (bench/chaos.ts), read from the store on the private PostgreSQL: every
// triggering event (the load's flow.start, the schedule's ticks) started exactly one execution, every
// execution ended, a succeeded one with a succeeded run of each task, and within an execution no task was
// started twice for one event, no task of the DAG had more than one first attempt, and only tasks with
// on_lost = "restart" were restarted.
import { readFile } from 'node:fs/promises';

import { ALL_NAMESPACES } from '../src/events/log.js';
import { RULES_LISTENER } from '../src/tasks/engine.js';
import type { ExecutionState } from '../src/tasks/executions.js';
import { isExecutionState } from '../src/tasks/executions.js';
import type { Database, Row } from './chaos-cluster.js';
import {
  SCHEDULE,
  WORKFLOW,
  WORKFLOW_NAMESPACE,
  WORKFLOW_START_KEY,
  WORKFLOW_TASKS,
} from './chaos-cluster.js';
import type { Outcomes } from './chaos-load.js';
import type { Deadline } from './support.js';

/** The triggering events of the workflow in baton_events (alias e), at or before offset $2. */
const TRIGGERS = `e.namespace = $1 AND e.key IN ('${WORKFLOW_START_KEY}', 'schedule.${SCHEDULE}.fired')
  AND e."offset" <= $2`;

/** The offset of the log's head: the triggering events up to it must all have ended executions. */
export async function logHead(db: Database, deadline: Deadline): Promise<number> {
  const [row] = await db.rows('SELECT last_offset FROM baton_event_head WHERE id = 1', [], deadline);
  return Number(row?.['last_offset'] ?? 0);
}

/**
 * What keeps the workflow from being settled up to `cutoff`: triggering events without their execution yet,
 * and executions of those events still queued or running (with how far behind the log's head the rule engine
 * is, and how many runs are open, to tell a slow engine from a stuck execution). Empty when settled.
 */
export async function workflowWaiting(db: Database, cutoff: number, deadline: Deadline): Promise<string[]> {
  const [row] = await db.rows(
    `SELECT
       (SELECT count(*) FROM baton_events e WHERE ${TRIGGERS} AND NOT EXISTS
          (SELECT 1 FROM baton_workflow_executions x WHERE x.workflow = $3 AND x.trigger_offset = e."offset"))::int
         AS waiting,
       (SELECT count(*) FILTER (WHERE state = 'queued') FROM baton_workflow_executions
         WHERE workflow = $3 AND trigger_offset <= $2)::int AS queued,
       (SELECT count(*) FILTER (WHERE state = 'running') FROM baton_workflow_executions
         WHERE workflow = $3 AND trigger_offset <= $2)::int AS running,
       (SELECT count(*) FROM baton_task_runs WHERE workflow = $3 AND state IN ('pending', 'running'))::int AS runs,
       (SELECT "offset" FROM baton_event_listeners WHERE namespace = $4 AND name = $5) AS engine,
       (SELECT last_offset FROM baton_event_head WHERE id = 1) AS head`,
    [WORKFLOW_NAMESPACE, cutoff, WORKFLOW, ALL_NAMESPACES, RULES_LISTENER],
    deadline,
  );
  const count = (key: string): number => Number(row?.[key] ?? 0);
  const waiting = count('waiting');
  const open = count('queued') + count('running');
  return [
    ...(waiting > 0 ? [`${waiting} triggering events without an execution`] : []),
    ...(open > 0
      ? [
          `${open} executions to end (${count('queued')} queued, ${count('running')} running; ${count('runs')} ` +
            `runs pending or running; the rule engine at offset ${count('engine')} of ${count('head')})`,
        ]
      : []),
  ];
}

export interface WorkflowCheck {
  /** Triggering events in the log up to the cutoff (the log's head when the load stopped). */
  readonly triggers: number;
  readonly executions: number;
  readonly byState: Readonly<Record<ExecutionState, number>>;
  /** Executions that waited in the queue (max_concurrent reached): their workflow.<name>.queued events. */
  readonly queued: number;
  /** From creation (the trigger) to the end, of the executions that ended: p50 and max (ms). */
  readonly tookP50Ms: number | null;
  readonly tookMaxMs: number | null;
  /** Triggering events (by offset, or by the load's unique value or the tick time) with more than one execution. */
  readonly twice: number;
  /** Triggering events up to the cutoff without an execution, and acknowledged flow.start not in the log. */
  readonly missing: number;
  /** Executions of triggering events up to the cutoff still queued or running at the check. */
  readonly unended: number;
  /** Executions `succeeded` without a succeeded run of every task. */
  readonly incomplete: number;
  /** (execution, task) pairs started twice: one event twice, two first attempts, or a restart of a "mark" task. */
  readonly tasksTwice: number;
  /** Runs `succeeded` whose work (their line in the workflow's file) is not there. */
  readonly withoutWork: number;
  readonly runs: number;
  readonly runsLost: number;
  readonly restarts: number;
  readonly examples: string[];
}

export async function checkWorkflow(
  db: Database,
  producer: Outcomes,
  cutoff: number,
  flowFile: string,
  deadline: Deadline,
): Promise<WorkflowCheck> {
  const examples: string[] = [];
  const note = (text: string): void => void (examples.length < 15 && examples.push(text));
  const query = (text: string, params: readonly unknown[] = [WORKFLOW]): Promise<Row[]> =>
    db.rows(text, params, deadline);

  const [triggers] = await query(`SELECT count(*)::int AS n FROM baton_events e WHERE ${TRIGGERS}`, [
    WORKFLOW_NAMESPACE,
    cutoff,
  ]);
  const byState: Record<ExecutionState, number> = {
    queued: 0,
    running: 0,
    succeeded: 0,
    failed: 0,
    stopped: 0,
    lost: 0,
  };
  for (const row of await query(
    'SELECT state, count(*)::int AS n FROM baton_workflow_executions WHERE workflow = $1 GROUP BY state',
  )) {
    const state = row['state'];
    if (isExecutionState(state)) byState[state] = Number(row['n']);
  }
  const [queued] = await query(
    'SELECT count(*)::int AS n FROM baton_events WHERE namespace = $1 AND key = $2 AND sender = $3',
    [WORKFLOW_NAMESPACE, `workflow.${WORKFLOW}.queued`, 'baton'],
  );

  // One trigger: the same offset, or the same event stored twice (the load's value, the tick's time).
  const twice = await query(
    `SELECT x.trigger_key, coalesce(e.value, 'offset ' || x.trigger_offset) AS trigger, count(*)::int AS n,
            string_agg(x.id || ' (offset ' || x.trigger_offset || ', ' || x.state || ')', ', ') AS executions
       FROM baton_workflow_executions x LEFT JOIN baton_events e ON e."offset" = x.trigger_offset
      WHERE x.workflow = $1 GROUP BY 1, 2 HAVING count(*) > 1`,
  );
  for (const row of twice) {
    note(
      `${String(row['trigger_key'])} ${String(row['trigger'])}: ${String(row['n'])} executions: ${String(row['executions'])}`,
    );
  }

  const missing = await query(
    `SELECT e."offset", e.key, e.value FROM baton_events e WHERE ${TRIGGERS} AND NOT EXISTS
       (SELECT 1 FROM baton_workflow_executions x WHERE x.workflow = $3 AND x.trigger_offset = e."offset")
     ORDER BY e."offset"`,
    [WORKFLOW_NAMESPACE, cutoff, WORKFLOW],
  );
  for (const row of missing.slice(0, 5)) {
    note(`${String(row['key'])} ${String(row['value'])} (offset ${String(row['offset'])}): no execution`);
  }
  const logged = new Set(
    (
      await query('SELECT value FROM baton_events WHERE namespace = $1 AND key = $2', [
        WORKFLOW_NAMESPACE,
        WORKFLOW_START_KEY,
      ])
    ).map((row) => String(row['value'])),
  );
  const notLogged = producer.acked.filter((value) => !logged.has(value));
  for (const value of notLogged.slice(0, 5))
    note(`${WORKFLOW_START_KEY} ${value}: acknowledged, not in the log`);

  const unended = await query(
    `SELECT id, state, trigger_key, trigger_offset, view::text AS view FROM baton_workflow_executions
      WHERE workflow = $1 AND trigger_offset <= $2 AND state IN ('queued', 'running') ORDER BY trigger_offset`,
    [WORKFLOW, cutoff],
  );
  for (const row of unended.slice(0, 5)) {
    note(
      `execution ${String(row['id'])} (${String(row['trigger_key'])}, offset ${String(row['trigger_offset'])}) ` +
        `still ${String(row['state'])} at the end; view ${String(row['view'])}`,
    );
  }

  const incomplete = await query(
    `SELECT x.id, coalesce(string_agg(DISTINCT r.task, ','), 'no task') AS succeeded FROM baton_workflow_executions x
       LEFT JOIN baton_task_runs r ON r.execution = x.id AND r.state = 'succeeded'
      WHERE x.workflow = $1 AND x.state = 'succeeded' GROUP BY x.id
     HAVING count(DISTINCT r.task) < $2`,
    [WORKFLOW, WORKFLOW_TASKS.length],
  );
  for (const row of incomplete.slice(0, 5)) {
    note(`execution ${String(row['id'])} succeeded with succeeded runs of ${String(row['succeeded'])} only`);
  }

  const tasksTwice = await query(
    `WITH wrong AS (
       SELECT execution, task, 'event ' || trigger_offset || ' started attempt ' || attempt || ' '
                || count(*) || ' times' AS why
         FROM baton_task_runs WHERE workflow = $1
        GROUP BY execution, task, trigger_offset, attempt HAVING count(*) > 1
       UNION ALL
       SELECT execution, task, count(*) || ' first attempts (events '
                || string_agg(trigger_offset::text, ', ' ORDER BY trigger_offset) || ')'
         FROM baton_task_runs WHERE workflow = $1 AND attempt = 1
        GROUP BY execution, task HAVING count(*) > 1
       UNION ALL
       SELECT execution, task, 'attempt ' || attempt || ' of a task with on_lost = "mark"'
         FROM baton_task_runs WHERE workflow = $1 AND attempt > 1 AND NOT restart_on_lost)
     SELECT execution, task, string_agg(why, '; ') AS why FROM wrong GROUP BY execution, task`,
  );
  for (const row of tasksTwice.slice(0, 5)) {
    note(`execution ${String(row['execution'])}, task ${String(row['task'])}: ${String(row['why'])}`);
  }

  const [took] = await query(
    `SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::int AS p50, round(max(ms))::int AS max
       FROM (SELECT extract(epoch FROM ended_at - created_at) * 1000 AS ms FROM baton_workflow_executions
              WHERE workflow = $1 AND ended_at IS NOT NULL) ended`,
  );

  const runs = await query('SELECT id, state, attempt FROM baton_task_runs WHERE workflow = $1');
  const text = await readFile(flowFile, 'utf8').catch(() => '');
  const worked = new Set(text.split('\n').map((line) => line.split(' ')[2]));
  const withoutWork = runs.filter((run) => run['state'] === 'succeeded' && !worked.has(String(run['id'])));
  for (const run of withoutWork.slice(0, 5)) note(`task run ${String(run['id'])} succeeded without its work`);

  return {
    triggers: Number(triggers?.['n'] ?? 0),
    executions: Object.values(byState).reduce((sum, n) => sum + n, 0),
    byState,
    queued: Number(queued?.['n'] ?? 0),
    tookP50Ms: optionalNumber(took?.['p50']),
    tookMaxMs: optionalNumber(took?.['max']),
    twice: twice.length,
    missing: missing.length + notLogged.length,
    unended: unended.length,
    incomplete: incomplete.length,
    tasksTwice: tasksTwice.length,
    withoutWork: withoutWork.length,
    runs: runs.length,
    runsLost: runs.filter((run) => run['state'] === 'lost').length,
    restarts: runs.filter((run) => Number(run['attempt']) > 1).length,
    examples,
  };
}

function optionalNumber(value: unknown): number | null {
  return value === null || value === undefined ? null : Number(value);
}
