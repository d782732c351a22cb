// Rules and tasks on a node in this process, on the embedded store: an event starts a command task that
// sends an event from inside its run, which starts a second task, whose state event starts a module task;
// runs are recorded with their states and exit codes; an event processed twice starts nothing twice; a
// stop rule, `baton tasks stop` and a timeout end running tasks; `baton tasks` lists the runs. The CLI
// tests run the built command (npm run build).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadConfig } from '../../src/config/load.js';
import type { BatonNode, StoredEvent, TaskRun } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import type { TempProject } from '../support/process.js';
import { runBaton, tempProject } from '../support/process.js';
import { countRuns, NOTIFY_MODULE, sendEventCommand, tomlString, waitFor } from './support.js';

let project: TempProject;
let node: BatonNode;
let out: string;

const toml = (outFile: string, sendEvent: string): string => `
[node]
name = "tasks-node"
data_dir = "data"
shutdown_timeout_ms = 3000
[log]
level = "silent"
[http]
port = 0

[tasks.first]
command = ${tomlString(`echo "first $BATON_TASK_RUN $BATON_NAMESPACE" >> ${outFile} && ${sendEvent} first.done`)}
namespace = "jobs"
[tasks.second]
command = ${tomlString(`echo "second $BATON_TASK_RUN" >> ${outFile}`)}
namespace = "jobs"
[tasks.third]
module = ${tomlString(NOTIFY_MODULE)}
namespace = "jobs"
[tasks.sleeper]
command = "echo \\"sleeper $BATON_TASK_RUN\\" >> ${outFile}; sleep 60"
[tasks.broken]
command = "echo oops >&2; exit 7"
[tasks.slow]
command = "sleep 60"
timeout_ms = 300

[[rules]]
on = { namespace = "jobs", key = "go" }
action = "start"
task = "first"
[[rules]]
on = { namespace = "jobs", key = "first.done" }
action = "start"
task = "second"
[[rules]]
on = { namespace = "jobs", key = "task.second.succeeded" }
action = "start"
task = "third"
[[rules]]
on = { key = "sleep" }
action = "start"
task = "sleeper"
[[rules]]
on = { key = "halt" }
action = "stop"
task = "sleeper"
[[rules]]
on = { key = "break", value = "yes" }
action = "start"
task = "broken"
[[rules]]
on = { key = "slow" }
action = "start"
task = "slow"
`;

async function start(): Promise<BatonNode> {
  const config = await loadConfig({ file: project.configPath, cwd: project.dir, env: {} });
  return startNode(config, {
    log: createLogger({ level: (process.env['TEST_LOG'] as 'info' | undefined) ?? 'silent' }),
  });
}

async function send(key: string, options: { namespace?: string; value?: string } = {}): Promise<number> {
  const events = node.events;
  if (!events) throw new Error('the node has no event log');
  const [event] = await events.append([{ key, ...options }]);
  return event?.offset ?? 0;
}

async function runsOf(task: string): Promise<TaskRun[]> {
  return node.admin.taskRuns({ task, limit: 1000 });
}

/** The run of `task` triggered by the event at `offset`, once it is in one of `states`. */
function settled(task: string, states: readonly string[], offset?: number): Promise<TaskRun> {
  return waitFor(
    async () =>
      (await runsOf(task)).find(
        (run) => states.includes(run.state) && (offset === undefined || run.triggerOffset === offset),
      ),
    20_000,
    `a run of ${task} in ${states.join('|')}`,
  );
}

async function events(namespace: string): Promise<StoredEvent[]> {
  return node.events?.list({ namespace, limit: 10_000 }) ?? [];
}

/** `baton -c <config> …` as a separate process: the CLI reaches the node that owns the embedded store. */
async function cli(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runBaton(['-c', project.configPath, ...args], { cwd: project.dir });
}

beforeAll(async () => {
  project = await tempProject({ toml: '' });
  out = project.path('out.txt');
  await project.write('baton.toml', toml(out, await sendEventCommand(project)));
  process.env['BATON_TEST_MODULE_OUT'] = out;
  node = await start();
});

afterAll(async () => {
  await node.stop();
  delete process.env['BATON_TEST_MODULE_OUT'];
  await project.cleanup();
});

describe('rules and tasks on one node', () => {
  it('chains: a rule starts a command task whose event starts a second task, whose state starts a third', async () => {
    const go = await send('go', { namespace: 'jobs' });
    const first = await settled('first', ['succeeded', 'failed'], go);
    expect(first).toMatchObject({
      state: 'succeeded',
      exitCode: 0,
      rule: 0,
      triggerKey: 'go',
      node: 'tasks-node',
    });
    const second = await settled('second', ['succeeded', 'failed']);
    expect(second.state).toBe('succeeded');
    const third = await settled('third', ['succeeded', 'failed']);
    expect(third).toMatchObject({ state: 'succeeded', triggerKey: 'task.second.succeeded' });

    // The command got BATON_TASK_RUN and BATON_NAMESPACE, and its event carries the run in its context.
    expect(await countRuns(out, 'first')).toBe(1);
    expect(await countRuns(out, 'second')).toBe(1);
    expect(await countRuns(out, 'mod')).toBe(1);
    const log = await events('jobs');
    const done = log.find((event) => event.key === 'first.done');
    expect(JSON.parse(done?.context ?? '{}')).toEqual({ taskRun: first.id });
    expect(second.triggerOffset).toBe(done?.offset);
    const modDone = log.find((event) => event.key === 'mod.done');
    expect(JSON.parse(modDone?.context ?? '{}')).toEqual({ taskRun: third.id });

    // State changes are events: pending, running, succeeded, with the exit code.
    const states = log.filter((event) => event.key.startsWith('task.first.')).map((event) => event.value);
    expect(states).toEqual(['pending', 'running', 'succeeded']);
    const succeeded = log.find((event) => event.key === 'task.first.succeeded');
    expect(JSON.parse(succeeded?.context ?? '{}')).toMatchObject({ taskRun: first.id, exitCode: 0 });
  });

  it('records a failing run with its exit code, and a value condition', async () => {
    await send('break', { value: 'no' });
    const offset = await send('break', { value: 'yes' });
    const run = await settled('broken', ['succeeded', 'failed']);
    expect(run).toMatchObject({ state: 'failed', exitCode: 7, triggerOffset: offset });
    expect(run.error).toContain('exit code 7');
    expect(await runsOf('broken')).toHaveLength(1);
  });

  it('a stop rule kills a running task; the run ends stopped', async () => {
    const offset = await send('sleep');
    const running = await settled('sleeper', ['running'], offset);
    await waitFor(async () => (await countRuns(out, 'sleeper')) === 1, 10_000, 'the sleeper to start');
    await send('halt');
    const stopped = await settled('sleeper', ['stopped', 'failed', 'succeeded'], offset);
    expect(stopped).toMatchObject({ id: running.id, state: 'stopped' });
    const log = await events('default');
    expect(log.filter((event) => event.key === 'task.sleeper.stopped')).toHaveLength(1);
  });

  it('a run past its timeout_ms is stopped and marked failed', async () => {
    const offset = await send('slow');
    const run = await settled('slow', ['failed', 'succeeded', 'stopped'], offset);
    expect(run.state).toBe('failed');
    expect(run.error).toContain('timed out after 300 ms');
  });

  it('baton tasks lists the runs; baton tasks stop stops one', async () => {
    const offset = await send('sleep');
    const running = await settled('sleeper', ['running'], offset);

    const listed = await cli('tasks', '--json', '--task', 'sleeper');
    expect(listed.stderr).toBe('');
    expect(listed.code).toBe(0);
    const parsed = JSON.parse(listed.stdout) as { runs: Array<{ id: string; state: string }> };
    expect(parsed.runs[0]).toMatchObject({ id: running.id, state: 'running' });

    const table = await cli('tasks');
    expect(table.code).toBe(0);
    expect(table.stdout).toContain(running.id);
    expect(table.stdout).toMatch(/sleeper +running/);

    const stop = await cli('tasks', 'stop', running.id);
    expect(stop.stderr).toBe('');
    expect(stop.stdout).toContain(`stop requested for run ${running.id}`);
    expect((await settled('sleeper', ['stopped', 'failed', 'succeeded'], offset)).state).toBe('stopped');

    const again = await cli('tasks', 'stop', running.id);
    expect(again.stdout).toContain('already ended: stopped');
    const unknown = await cli('tasks', 'stop', 'no-such-run');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('unknown task run');
  });

  it('processing the same events again (a failover before the offset moved) starts nothing twice', async () => {
    const before = (await node.admin.taskRuns({ limit: 10_000 })).length;
    const lines = { first: await countRuns(out, 'first'), second: await countRuns(out, 'second') };
    // Move the rules' offset back to the start, as if none of the events had been applied, then restart.
    await node.admin.sql(`UPDATE baton_event_listeners SET "offset" = 0 WHERE name = 'baton.rules'`);
    await node.stop();
    node = await start();
    const head = (await node.events?.latestOffset()) ?? 0;
    await waitFor(
      async () => ((await node.events?.listenerOffset('*', 'baton.rules')) ?? 0) >= head,
      20_000,
      'the rules to catch up',
    );
    expect((await node.admin.taskRuns({ limit: 10_000 })).length).toBe(before);
    expect(await countRuns(out, 'first')).toBe(lines.first);
    expect(await countRuns(out, 'second')).toBe(lines.second);
  });
});
