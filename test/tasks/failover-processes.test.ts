// Rules and tasks across a failover, with real node processes on PostgreSQL (postgres elector): an event
// starts task `first`, whose run sends `first.done` from inside, which starts task `second`. Each task waits
// at a gate file before it does its work (appending one line to a shared file), so the test decides where
// the chain is when the primary changes:
// 1. a manual failover while `first` waits: its run is stopped with its node and marked lost; its rule has
//    on_lost = "restart", so the new primary starts it again, and that run does the work once;
// 2. kill -9 of the primary while `second` waits: the new primary marks the run lost and, with
//    on_lost = "mark", does not restart it. (A command outlives a node killed with -9: it ends on its own.)
// Each task's work is done exactly once.
import { writeFile } from 'node:fs/promises';

import { afterEach, describe, expect, it } from 'vitest';

import type { TestDatabase } from '../support/postgres.js';
import { createTestDatabase } from '../support/postgres.js';
import type { BatonNodeProcess, TempProject } from '../support/process.js';
import { cleanupAll, freePort, startBatonNode, tempProject } from '../support/process.js';
import { countRuns, sendEventCommand, tomlString, waitFor } from './support.js';

let database: TestDatabase | undefined;
let gates: string[] = [];

afterEach(async () => {
  // Open the gates, so that a task process left behind by a killed node ends.
  await Promise.all(gates.map((gate) => writeFile(gate, '').catch(() => undefined)));
  gates = [];
  await cleanupAll();
  await database?.drop();
  database = undefined;
});

interface RunJson {
  id: string;
  task: string;
  state: string;
  attempt: number;
  restart_of: string | null;
  node: string | null;
  trigger_key: string;
}

async function runs(node: BatonNodeProcess, task: string): Promise<RunJson[] | undefined> {
  try {
    const response = await fetch(`${node.url}/v1/tasks?task=${task}`, { signal: AbortSignal.timeout(2000) });
    if (!response.ok) return undefined;
    return ((await response.json()) as { runs: RunJson[] }).runs;
  } catch {
    return undefined;
  }
}

async function role(node: BatonNodeProcess): Promise<{ role: string; term: number } | undefined> {
  try {
    const response = await fetch(`${node.url}/v1/cluster`, { signal: AbortSignal.timeout(2000) });
    return (await response.json()) as { role: string; term: number };
  } catch {
    return undefined;
  }
}

async function primaryOf(nodes: readonly BatonNodeProcess[]): Promise<BatonNodeProcess> {
  return waitFor(
    async () => {
      const roles = await Promise.all(nodes.map(role));
      const primaries = nodes.filter((_, index) => roles[index]?.role === 'primary');
      return primaries.length === 1 ? primaries[0] : undefined;
    },
    20_000,
    'one primary',
  );
}

/** The runs of `task` once `check` accepts them (asked of `node`). */
function runsWhen(
  node: BatonNodeProcess,
  task: string,
  check: (runs: RunJson[]) => boolean,
  what: string,
): Promise<RunJson[]> {
  return waitFor(
    async () => {
      const found = await runs(node, task);
      return found && check(found) ? found : undefined;
    },
    30_000,
    what,
  );
}

async function group(shared: TempProject, size: number): Promise<BatonNodeProcess[]> {
  database = await createTestDatabase();
  const out = shared.path('out.txt');
  const gate = (n: number): string => shared.path(`gate${n}`);
  gates = [gate(1), gate(2)];
  const sendEvent = await sendEventCommand(shared);
  const waitAt = (file: string): string => `while [ ! -f ${file} ]; do sleep 0.05; done`;
  const configs: string[] = [];
  for (let index = 0; index < size; index++) {
    const project = await tempProject({
      toml:
        `[node]\nname = "n${index + 1}"\ndata_dir = "data"\nshutdown_timeout_ms = 3000\n[log]\nlevel = "warn"\n` +
        `[http]\nport = ${await freePort()}\n[store]\nurl = "${database.url}"\npool_size = 3\n` +
        `[group]\nname = "g"\nelector = "postgres"\nlease_ms = 2000\nrenew_deadline_ms = 1200\nheartbeat_ms = 200\n` +
        `[tasks.first]\nnamespace = "jobs"\ncommand = ${tomlString(
          `${waitAt(gate(1))}; echo "first $BATON_TASK_RUN" >> ${out} && ${sendEvent} first.done`,
        )}\n` +
        `[tasks.second]\nnamespace = "jobs"\ncommand = ${tomlString(
          `${waitAt(gate(2))}; echo "second $BATON_TASK_RUN" >> ${out}`,
        )}\n` +
        `[[rules]]\non = { namespace = "jobs", key = "go" }\naction = "start"\ntask = "first"\non_lost = "restart"\n` +
        `[[rules]]\non = { namespace = "jobs", key = "first.done" }\naction = "start"\ntask = "second"\n`,
    });
    configs.push(project.configPath);
  }
  return Promise.all(configs.map((config) => startBatonNode(config)));
}

describe('rules and tasks across failovers (node processes, PostgreSQL)', () => {
  it('runs each task of a chain once when the primary changes in the middle of it', async () => {
    const shared = await tempProject({ toml: '' });
    const out = shared.path('out.txt');
    const nodes = await group(shared, 2);
    const firstPrimary = await primaryOf(nodes);
    const other = nodes.find((node) => node !== firstPrimary) as BatonNodeProcess;

    const sent = await fetch(`${other.url}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ key: 'go', namespace: 'jobs' }),
    });
    expect(sent.status).toBe(201);
    const [waiting] = await runsWhen(
      other,
      'first',
      (found) => found.some((run) => run.state === 'running'),
      'first to run',
    );
    expect(waiting?.node).toBe(firstPrimary.url === nodes[0]?.url ? 'n1' : 'n2');

    // 1. Manual failover while `first` waits at its gate.
    const failover = await fetch(`${firstPrimary.url}/v1/cluster/failover`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    expect(failover.status).toBe(200);
    const secondPrimary = await primaryOf(nodes);
    expect(secondPrimary).toBe(other);
    const firstRuns = await runsWhen(
      secondPrimary,
      'first',
      (found) => found.some((run) => run.attempt === 2 && run.state === 'running'),
      'the lost run of first to be restarted',
    );
    expect(firstRuns.find((run) => run.id === waiting?.id)?.state).toBe('lost');
    expect(firstRuns.find((run) => run.attempt === 2)?.restart_of).toBe(waiting?.id);
    await writeFile(shared.path('gate1'), '');
    await runsWhen(
      secondPrimary,
      'first',
      (found) => found.some((run) => run.attempt === 2 && run.state === 'succeeded'),
      'the restarted first to succeed',
    );
    const [second] = await runsWhen(
      secondPrimary,
      'second',
      (found) => found.some((run) => run.state === 'running'),
      'second to run',
    );
    expect(second?.trigger_key).toBe('first.done');

    // 2. kill -9 of the primary while `second` waits at its gate.
    await secondPrimary.stop('SIGKILL');
    const survivor = firstPrimary;
    expect(await primaryOf([survivor])).toBe(survivor);
    const secondRuns = await runsWhen(
      survivor,
      'second',
      (found) => found.every((run) => run.state === 'lost'),
      'second to be marked lost',
    );
    expect(secondRuns).toHaveLength(1);
    // The command outlived its node: let it through its gate; it does its work once and is not restarted.
    await writeFile(shared.path('gate2'), '');
    await waitFor(async () => (await countRuns(out, 'second')) === 1, 10_000, 'the orphaned second to end');

    const finalFirst = (await runs(survivor, 'first')) ?? [];
    expect(finalFirst.map((run) => run.state).sort()).toEqual(['lost', 'succeeded']);
    expect((await runs(survivor, 'second'))?.map((run) => run.state)).toEqual(['lost']);
    expect(await countRuns(out, 'first')).toBe(1);
    expect(await countRuns(out, 'second')).toBe(1);
    // The lost states are events too.
    const lostEvents = await fetch(`${survivor.url}/v1/events?namespace=jobs&key=task.second.lost`).then(
      (response) => response.json() as Promise<{ events: unknown[] }>,
    );
    expect(lostEvents.events).toHaveLength(1);
  }, 120_000);
});
