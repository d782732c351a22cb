// The Workflows panel: the workflows with their queued and running executions, the recent executions, and
// one execution (chosen by a click, or linked as #execution=<id>) as its DAG with its task runs. Read from
// GET /v1/workflows and GET /v1/workflows/executions/:id on every snapshot; a node that has no such routes
// (an older version) is asked again now and then. Everything from the API is set as text.
import { $, api, cell, fill, row, time } from './dom.js';
import { drawDag, ruleEdges } from './dag.js';

const EXECUTIONS_SHOWN = 20;
/** How long to wait before asking again a node that answered 404 for GET /v1/workflows. */
const ABSENT_RETRY_MS = 30_000;
const OPEN_STATES = new Set(['queued', 'running']);

let workflows = [];
let knownNames = '';
/** The execution whose DAG is shown (from the URL's hash), or null. */
let selected = null;
/** What the detail shows now: the id and state it was drawn for. */
let drawn;
let loading = false;
let absentAt;

const executionHash = (id) => `#${new URLSearchParams({ execution: id })}`;
const hashExecution = () => new URLSearchParams(location.hash.slice(1)).get('execution') || null;

/** Loads the panel again, unless a load is under way (called on every snapshot). */
export function refreshWorkflows() {
  if (loading || (absentAt !== undefined && Date.now() - absentAt < ABSENT_RETRY_MS)) return;
  loading = true;
  void load().finally(() => {
    loading = false;
  });
}

async function load() {
  const filter = $('#execution-workflow').value;
  const query = new URLSearchParams({
    limit: String(EXECUTIONS_SHOWN),
    ...(filter ? { workflow: filter } : {}),
  });
  let body;
  try {
    body = await api(`/v1/workflows?${query}`);
  } catch (error) {
    if (error.status === 404) {
      absentAt = Date.now();
      workflows = [];
      $('#workflows-note').textContent = 'this node serves no workflows (an older version of Baton)';
      fill('#workflows', [], 'no workflow');
      fill('#executions', [], 'no execution');
      $('#execution').hidden = true;
    } else {
      $('#workflows-note').textContent = `could not list the workflows: ${error.message}`;
    }
    return;
  }
  absentAt = undefined;
  workflows = body.workflows;
  $('#workflows-note').textContent = '';
  renderWorkflows();
  renderExecutions(body.executions);
  const listed = body.executions.find((execution) => execution.id === selected);
  const stale =
    drawn?.id !== selected ||
    OPEN_STATES.has(drawn.state) ||
    (listed !== undefined && listed.state !== drawn.state);
  if (selected !== null && stale) await loadExecution(selected);
}

function renderWorkflows() {
  fill(
    '#workflows',
    workflows.map((workflow) => {
      const triggers = workflow.triggers.map(
        (trigger) =>
          `${trigger.namespace}: ${trigger.key}${trigger.value === null ? '' : ` = ${trigger.value}`}`,
      );
      const tr = row([
        cell(workflow.name),
        cell(workflow.namespace),
        Object.assign(cell(workflow.tasks.length, 'num'), {
          title: workflow.tasks.map((task) => task.name).join(', '),
        }),
        cell(triggers.length === 0 ? 'by hand' : triggers.join('; '), 'wrap'),
        cell(workflow.max_concurrent === 0 ? 'none' : `${workflow.max_concurrent} (${workflow.over_limit})`),
        cell(workflow.queued, 'num'),
        cell(workflow.running, 'num'),
      ]);
      tr.dataset.workflow = workflow.name;
      return tr;
    }),
    'no workflow is configured',
  );
  const names = workflows.map((workflow) => workflow.name);
  if (names.join('\n') === knownNames) return;
  knownNames = names.join('\n');
  const select = $('#execution-workflow');
  const chosen = select.value;
  const all = document.createElement('option');
  all.value = '';
  all.textContent = 'all';
  select.replaceChildren(
    all,
    ...names.map((name) => {
      const option = document.createElement('option');
      option.value = name;
      option.textContent = name;
      return option;
    }),
  );
  select.value = names.includes(chosen) ? chosen : '';
}

function renderExecutions(executions) {
  fill(
    '#executions',
    executions.map((execution) => {
      const link = document.createElement('a');
      link.href = executionHash(execution.id);
      link.textContent = execution.id.length > 12 ? `${execution.id.slice(0, 8)}…` : execution.id;
      link.title = execution.id;
      const id = document.createElement('td');
      id.append(link);
      const tr = row([
        id,
        cell(execution.workflow),
        cell(
          `${execution.state}${execution.stop_requested && OPEN_STATES.has(execution.state) ? ' (stopping)' : ''}`,
        ),
        Object.assign(cell(execution.trigger_key), { title: `event offset ${execution.trigger_offset}` }),
        cell(time(execution.created_at)),
        cell(time(execution.started_at)),
        cell(time(execution.ended_at)),
        cell(execution.error, 'wrap'),
      ]);
      tr.dataset.execution = execution.id;
      tr.dataset.state = execution.state;
      tr.className = execution.id === selected ? 'selectable selected' : 'selectable';
      return tr;
    }),
    'no execution yet',
  );
}

async function loadExecution(id) {
  let body;
  try {
    body = await api(`/v1/workflows/executions/${encodeURIComponent(id)}`);
  } catch (error) {
    if (selected !== id) return;
    drawn = { id, state: undefined };
    showExecution(id);
    $('#execution-summary').textContent = '';
    $('#execution-error').textContent =
      error.code === 'UNKNOWN_EXECUTION' ? 'no such execution' : `could not read it: ${error.message}`;
    $('#dag').replaceChildren();
    $('#execution-note').textContent = '';
    fill('#runs', [], '');
    return;
  }
  if (selected !== id) return;
  renderExecution(body);
}

function showExecution(id) {
  $('#execution').hidden = false;
  $('#execution-title').textContent = `Execution ${id}`;
}

function renderExecution({ execution, runs, dag }) {
  const moved = drawn?.id !== execution.id;
  drawn = { id: execution.id, state: execution.state };
  showExecution(execution.id);
  $('#execution-summary').textContent = [
    `${execution.workflow} (${execution.namespace}): ${execution.state}`,
    `trigger ${execution.trigger_key} at offset ${execution.trigger_offset}`,
    `created ${time(execution.created_at)}`,
    `started ${time(execution.started_at)}`,
    `ended ${time(execution.ended_at)}`,
    `node ${execution.node}, term ${execution.term}`,
  ].join(' · ');
  $('#execution-error').textContent = execution.error ?? '';

  const runsOf = (name) => runs.filter((run) => run.task === name).length;
  const states = execution.tasks ?? {};
  const configured = dag.tasks.length > 0;
  const tasks = configured
    ? dag.tasks.map((task) => ({
        name: task.name,
        after: task.after,
        state: task.state ?? states[task.name] ?? null,
        runs: runsOf(task.name),
      }))
    : [...new Set([...Object.keys(states), ...runs.map((run) => run.task)])].map((name) => ({
        name,
        after: [],
        state: states[name] ?? null,
        runs: runsOf(name),
      }));
  const rules = workflows.find((workflow) => workflow.name === execution.workflow)?.rules;
  drawDag($('#dag'), tasks, configured ? ruleEdges(rules) : []);
  $('#execution-note').textContent = configured
    ? ''
    : 'the workflow is not configured on this node: its tasks are shown without their order';

  fill(
    '#runs',
    runs.map((run) => {
      const tr = row([
        Object.assign(cell(String(run.id).slice(0, 8)), { title: run.id }),
        cell(run.task),
        cell(run.attempt, 'num'),
        cell(run.state),
        cell(run.node),
        cell(time(run.started_at)),
        cell(time(run.ended_at)),
        cell(run.exit_code, 'num'),
        cell(run.error, 'wrap'),
      ]);
      tr.dataset.task = run.task;
      return tr;
    }),
    'no task run yet',
  );
  for (const tr of $('#executions tbody').children) {
    tr.classList.toggle('selected', tr.dataset.execution === execution.id);
  }
  if (moved) $('#execution').scrollIntoView({ block: 'nearest' });
}

function select(id) {
  selected = id;
  drawn = undefined;
  if (id === null) {
    $('#execution').hidden = true;
    for (const tr of $('#executions tbody').children) tr.classList.remove('selected');
    return;
  }
  void loadExecution(id);
}

/** Wires the panel's controls and takes the execution named by the URL's hash, if any. */
export function setUpWorkflows() {
  $('#executions').addEventListener('click', (event) => {
    const tr = event.target.closest('tr[data-execution]');
    // A click on the link changes the hash itself.
    if (tr && !event.target.closest('a')) location.hash = executionHash(tr.dataset.execution);
  });
  $('#execution-workflow').addEventListener('change', () => refreshWorkflows());
  $('#execution-close').addEventListener('click', () => {
    history.pushState(null, '', location.pathname + location.search);
    select(null);
  });
  window.addEventListener('hashchange', () => select(hashExecution()));
  selected = hashExecution();
}
