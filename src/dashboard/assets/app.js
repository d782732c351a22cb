// The dashboard: one snapshot of the node per second over SSE (group, queues, components, task runs), the
// error queues on demand, and the event stream with filters. Everything shown is set with textContent:
// record payloads and event values are data, never markup. The workflows have a module of their own.
import { $, api, cell, CSRF, fill, row, time } from './dom.js';
import { refreshWorkflows, setUpWorkflows } from './workflows.js';

const PLOT_SECONDS = 300;
const EVENTS_SHOWN = 100;
/** Error records per page of the error queue panel. */
const ERRORS_PAGE = 50;

/** Rates are derived from the counters of two successive snapshots. */
let previous;
const throughput = [];
let selectedQueue = '';
// The shown page of the error queue: a cursor (the API's after= or before=) or none for the oldest page.
let errorsCursor = {};
let errorsShown = [];
let knownQueues = [];
let eventSource;

function ago(iso, now) {
  if (!iso) return '-';
  const seconds = Math.max(0, (now - Date.parse(iso)) / 1000);
  return seconds < 60 ? `${seconds.toFixed(1)} s ago` : `${Math.round(seconds / 60)} min ago`;
}

function renderSnapshot(snapshot) {
  const now = Date.parse(snapshot.at);
  $('#node-name').textContent = `node ${snapshot.node}`;
  const role = $('#role');
  role.textContent = snapshot.role;
  role.className = `badge ${snapshot.role}`;
  $('#term').textContent = snapshot.role === 'not-in-group' ? '' : `term ${snapshot.term}`;

  const cluster = snapshot.cluster;
  $('#group-summary').textContent = cluster.group
    ? `group ${cluster.group} (${cluster.elector} elector): primary ${cluster.primary ?? 'unknown'}, term ${cluster.term}`
    : 'not in a group: this node acts alone';
  fill(
    '#members',
    cluster.members.map((member) =>
      row([
        cell(member.node),
        cell(member.role),
        cell(member.term, 'num'),
        cell(member.address),
        cell(ago(member.last_seen, now)),
      ]),
    ),
    cluster.group ? 'no member is running' : '',
  );
  $('#failovers').replaceChildren(
    ...cluster.failovers.map((failover) => {
      const item = document.createElement('li');
      item.textContent = `${time(failover.at)}: term ${failover.term}, primary ${failover.primary ?? 'none'} (${failover.cause})`;
      return item;
    }),
  );

  const elapsed = previous ? (now - Date.parse(previous.at)) / 1000 : 0;
  const before = new Map((previous?.queues ?? []).map((queue) => [queue.name, queue]));
  let total = 0;
  fill(
    '#queues',
    snapshot.queues.map((queue) => {
      const last = before.get(queue.name);
      const rate = (field) =>
        last && elapsed > 0 && queue[field] !== null && last[field] !== null
          ? Math.max(0, (queue[field] - last[field]) / elapsed)
          : 0;
      const processed = rate('processed');
      total += processed;
      const tr = row([
        cell(queue.name),
        cell(queue.backend),
        cell(queue.depth, 'num'),
        cell(queue.delayed_capped ? `${queue.delayed}+` : (queue.delayed ?? 0), 'num'),
        cell(queue.in_flight, 'num'),
        cell(queue.processed, 'num'),
        cell(processed.toFixed(0), 'num'),
        cell(rate('failed').toFixed(1), 'num'),
        cell(queue.errors, 'num'),
      ]);
      tr.dataset.queue = queue.name;
      return tr;
    }),
    'no queue is configured',
  );
  if (previous) {
    throughput.push({ at: now, rate: total });
    while (throughput.length > 0 && now - throughput[0].at > PLOT_SECONDS * 1000) throughput.shift();
    plot(now);
    $('#throughput-now').textContent = total.toFixed(0);
  }
  previous = snapshot;

  const names = snapshot.queues.map((queue) => queue.name);
  if (names.join('\n') !== knownQueues.join('\n')) {
    knownQueues = names;
    const select = $('#error-queue');
    select.replaceChildren(
      ...names.map((name) => {
        const option = document.createElement('option');
        option.value = name;
        option.textContent = name;
        return option;
      }),
    );
    if (!names.includes(selectedQueue)) {
      selectedQueue = names[0] ?? '';
      errorsCursor = {};
    }
    select.value = selectedQueue;
    void loadErrors();
  }
  const shown = snapshot.queues.find((queue) => queue.name === selectedQueue);
  if (shown && shown.errors !== Number($('#errors').dataset.count ?? -1)) void loadErrors();

  fill(
    '#tasks',
    (snapshot.tasks ?? []).map((run) =>
      row([
        Object.assign(cell(String(run.id).slice(0, 8)), { title: run.id }),
        cell(run.task),
        cell(run.state),
        cell(time(run.started_at)),
        cell(time(run.ended_at)),
        cell(run.exit_code, 'num'),
      ]),
    ),
    snapshot.tasks === null ? 'tasks are not configured on this node' : 'no task run yet',
  );

  fill(
    '#schedules',
    (snapshot.schedules ?? []).map((schedule) =>
      row([
        cell(schedule.name),
        Object.assign(cell(schedule.configured ? schedule.spec : 'removed'), {
          title: schedule.action ?? 'removed from the config',
        }),
        cell(time(schedule.last_tick?.tick)),
        cell(schedule.last_tick?.term ?? '-', 'num'),
        cell(time(schedule.next_tick)),
        cell(schedule.lag_ms, 'num'),
        cell(schedule.missed, 'num'),
      ]),
    ),
    'no schedule',
  );

  refreshWorkflows();
}

function plot(now) {
  const svg = $('#throughput');
  const width = 600;
  const height = 140;
  const top = Math.max(10, ...throughput.map((point) => point.rate)) * 1.1;
  const points = throughput
    .map((point) => {
      const x = width - ((now - point.at) / (PLOT_SECONDS * 1000)) * width;
      const y = height - (point.rate / top) * (height - 12);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', points);
  const label = document.createElementNS('http://www.w3.org/2000/svg', 'text');
  label.setAttribute('x', '4');
  label.setAttribute('y', '11');
  label.textContent = `${Math.round(top)}/s`;
  svg.replaceChildren(line, label);
}

async function loadErrors() {
  const table = $('#errors');
  if (!selectedQueue) {
    fill('#errors', [], 'no queue is configured');
    return;
  }
  try {
    const query = new URLSearchParams({ limit: String(ERRORS_PAGE), ...errorsCursor });
    const body = await api(`/v1/queues/${encodeURIComponent(selectedQueue)}/errors?${query}`);
    // Past the last record (all of the page replayed, say): show the page before it instead.
    if (body.errors.length === 0 && errorsCursor.after !== undefined) {
      errorsCursor = { before: String(BigInt(errorsCursor.after) + 1n) };
      return loadErrors();
    }
    errorsShown = body.errors.map((record) => record.id);
    $('#errors-earlier').disabled =
      errorsShown.length === 0 ||
      (errorsCursor.after === undefined &&
        (errorsCursor.before === undefined || errorsShown.length < ERRORS_PAGE));
    $('#errors-later').disabled = errorsShown.length < ERRORS_PAGE && errorsCursor.before === undefined;
    const count =
      previous?.queues.find((queue) => queue.name === selectedQueue)?.errors ?? body.errors.length;
    table.dataset.count = String(count);
    $('#errors-note').textContent = `${body.error_queue}: ${count} record(s) waiting`;
    fill(
      '#errors',
      body.errors.map((record) => {
        const replay = document.createElement('button');
        replay.type = 'button';
        replay.textContent = 'Replay';
        replay.dataset.action = 'replay';
        const drop = document.createElement('button');
        drop.type = 'button';
        drop.textContent = 'Drop';
        drop.dataset.action = 'drop';
        const actions = document.createElement('td');
        actions.append(replay, ' ', drop);
        const tr = row([
          cell(record.id),
          cell(record.attempts, 'num'),
          cell(record.error, 'wrap'),
          cell(time(record.failed_at)),
          cell(record.payload_text ?? `base64: ${record.payload_base64}`, 'wrap'),
          actions,
        ]);
        tr.dataset.id = record.id;
        return tr;
      }),
      'the error queue is empty',
    );
  } catch (error) {
    $('#errors-note').textContent = `could not list the error queue: ${error.message}`;
  }
}

async function errorAction(event) {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const id = button.closest('tr').dataset.id;
  const queue = encodeURIComponent(selectedQueue);
  button.disabled = true;
  try {
    if (button.dataset.action === 'replay') {
      await api(`/v1/queues/${queue}/errors/replay`, { method: 'POST', body: JSON.stringify({ ids: [id] }) });
    } else {
      await api(`/v1/queues/${queue}/errors/${encodeURIComponent(id)}`, { method: 'DELETE' });
    }
  } catch (error) {
    $('#errors-note').textContent = error.message;
  }
  await loadErrors();
}

async function replayAll() {
  try {
    const body = await api(`/v1/queues/${encodeURIComponent(selectedQueue)}/errors/replay`, {
      method: 'POST',
      body: JSON.stringify({}),
    });
    $('#errors-note').textContent = `replayed ${body.replayed} record(s)`;
  } catch (error) {
    $('#errors-note').textContent = error.message;
  }
  await loadErrors();
}

function followEvents(head) {
  eventSource?.close();
  const form = new FormData($('#event-filter'));
  const params = new URLSearchParams();
  const namespace = String(form.get('namespace') ?? '').trim();
  const keys = String(form.get('keys') ?? '').trim();
  if (namespace) params.set('namespace', namespace);
  if (keys) params.set('keys', keys);
  params.set('from', String(Math.max(0, head - EVENTS_SHOWN)));
  fill('#events', [], 'waiting for events…');
  const body = $('#events tbody');
  eventSource = new EventSource(`/v1/events/stream?${params}`);
  eventSource.addEventListener('event', (message) => {
    const event = JSON.parse(message.data);
    if (body.querySelector('td.muted')) body.replaceChildren();
    body.prepend(
      row([
        cell(event.offset, 'num'),
        cell(time(event.create_time)),
        cell(event.namespace),
        cell(event.key),
        cell(event.value, 'wrap'),
        cell(event.sender),
      ]),
    );
    while (body.children.length > EVENTS_SHOWN) body.lastElementChild.remove();
  });
}

function connect() {
  const link = $('#link');
  const stream = new EventSource('/v1/dashboard/stream');
  let first = true;
  stream.onopen = () => {
    link.textContent = 'live';
    link.className = 'link-state';
  };
  stream.onmessage = (message) => {
    const snapshot = JSON.parse(message.data);
    renderSnapshot(snapshot);
    if (first) {
      first = false;
      if (snapshot.events_head !== null) followEvents(snapshot.events_head);
      else fill('#events', [], 'the event log is disabled on this node');
    }
  };
  stream.onerror = () => {
    link.textContent = 'reconnecting…';
    link.className = 'link-state down';
    // A 401 closes the stream for good: find out whether signing in is what is missing.
    if (stream.readyState === EventSource.CLOSED) {
      void api('/v1/session').then(
        () => setTimeout(connect, 2000),
        () => undefined,
      );
    }
  };
}

async function signIn(event) {
  event.preventDefault();
  const token = $('#login-token').value;
  try {
    await fetch('/v1/session', {
      method: 'POST',
      headers: { ...CSRF, 'content-type': 'application/json' },
      body: JSON.stringify({ token }),
    }).then(async (response) => {
      if (!response.ok) throw new Error((await response.json()).error ?? 'sign-in failed');
    });
    $('#login').close();
    location.reload();
  } catch (error) {
    $('#login-error').textContent = error.message;
  }
}

$('#errors').addEventListener('click', (event) => void errorAction(event));
$('#error-queue').addEventListener('change', (event) => {
  selectedQueue = event.target.value;
  errorsCursor = {};
  void loadErrors();
});
$('#errors-earlier').addEventListener('click', () => {
  errorsCursor = { before: errorsShown[0] };
  void loadErrors();
});
$('#errors-later').addEventListener('click', () => {
  errorsCursor = { after: errorsShown.at(-1) };
  void loadErrors();
});
$('#replay-all').addEventListener('click', () => {
  errorsCursor = {};
  void replayAll();
});
$('#errors-refresh').addEventListener('click', () => void loadErrors());
$('#event-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  followEvents(previous?.events_head ?? 0);
});
$('#login-form').addEventListener('submit', (event) => void signIn(event));
setUpWorkflows();

api('/v1/session').then(connect, () => undefined);
