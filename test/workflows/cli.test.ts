// `baton workflows` on a node in this process (embedded store, command tasks): the built command lists the
// workflows and executions, shows one with its tasks in DAG order and their runs, starts one and waits for
// its end (exit 0 when it succeeded, 1 when it failed or was skipped, with the reason), stops one, and asks
// the node at --url. The tests run the built command (npm run build).
import { describe, expect, it } from 'vitest';

import type { RunResult } from '../support/process.js';
import { runBaton } from '../support/process.js';
import { waitFor } from '../tasks/support.js';
import { ADMIN, useWorkflowsNode } from './surfaces-support.js';

const node = useWorkflowsNode();

/** `baton -c <config> workflows …` as a separate process: it reaches the node that owns the store. */
function cli(...args: string[]): Promise<RunResult> {
  return runBaton(['-c', node().project.configPath, 'workflows', ...args], {
    cwd: node().project.dir,
    timeoutMs: 180_000,
  });
}

async function stateOf(id: string): Promise<string | undefined> {
  return (
    await node()
      .node.admin.execution(id)
      .catch(() => undefined)
  )?.execution.state;
}

describe('baton workflows', () => {
  it('start --wait prints the id and exits 0 when the execution succeeded; show and the listing', async () => {
    const started = await cli('start', 'etl', '--wait');
    expect(started.stderr).toBe('');
    expect(started.code).toBe(0);
    const [id, outcome] = started.stdout.trim().split('\n');
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(outcome).toBe(`execution ${id} of etl succeeded`);

    const shown = await cli('show', id ?? '');
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain(`execution ${id} of etl (namespace etl): succeeded`);
    const rows = shown.stdout.split('\n').filter((line) => /^(extract|load|report) /.test(line));
    expect(rows.map((line) => line.split(/ +/).slice(0, 3))).toEqual([
      ['extract', 'succeeded', '-'],
      ['load', 'succeeded', 'extract'],
      ['report', 'succeeded', '-'],
    ]);
    const runs = (await node().node.admin.execution(id ?? '')).runs;
    for (const run of runs) expect(shown.stdout).toContain(run.id);

    const json = await cli('show', id ?? '', '--json');
    const detail = JSON.parse(json.stdout) as { execution: { id: string }; dag: { tasks: unknown[] } };
    expect(detail.execution.id).toBe(id);
    expect(detail.dag.tasks).toHaveLength(3);

    const table = await cli();
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^etl +etl +report, load, extract +- +0 +0$/m);
    expect(table.stdout).toMatch(/^slow +ops +wait +1 \(skip\) +0 +0$/m);
    expect(table.stdout).toContain(id);
    const listed = JSON.parse((await cli('--json', '--workflow', 'etl', '--state', 'succeeded')).stdout) as {
      workflows: Array<{ name: string }>;
      executions: Array<{ id: string }>;
    };
    expect(listed.workflows.map((workflow) => workflow.name)).toEqual(['etl']);
    expect(listed.executions.map((execution) => execution.id)).toEqual([id]);
  });

  it('start --wait exits 1 for a failed execution, and for one that was skipped, saying why', async () => {
    const failed = await cli('start', 'broken', '--id', 'broken-cli', '--wait', '--json');
    expect(failed.code).toBe(1);
    const reply = JSON.parse(failed.stdout) as { execution: string; ended: { state: string; error: string } };
    expect(reply).toMatchObject({
      execution: 'broken-cli',
      ended: { state: 'failed', error: 'task fail failed' },
    });

    const first = await cli('start', 'slow');
    expect(first.code).toBe(0);
    const running = first.stdout.trim();
    await waitFor(async () => (await stateOf(running)) === 'running', 60_000, 'the slow execution to run');
    const skipped = await cli('start', 'slow', '--wait');
    expect(skipped.code).toBe(1);
    expect(skipped.stderr).toMatch(/was not created: the primary passed its start event \(offset \d+\)/);
    expect(skipped.stderr).toContain('over_limit = "skip"');

    const stop = await cli('stop', running);
    expect(stop.stderr).toBe('');
    expect(stop.stdout).toBe(`stop requested for execution ${running} of slow (running)\n`);
    await waitFor(async () => (await stateOf(running)) === 'stopped', 60_000, 'the execution to stop');
    expect((await cli('stop', running)).stdout).toContain('already ended: stopped');
  });

  it('exits 1 with the error for an unknown workflow or execution', async () => {
    const unknown = await cli('start', 'nope');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('unknown workflow "nope": expected one of etl, slow, broken');
    for (const args of [
      ['show', 'nope'],
      ['stop', 'nope'],
    ]) {
      const result = await cli(...args);
      expect(result.code, args.join(' ')).toBe(1);
      expect(result.stderr).toContain('unknown workflow execution "nope"');
    }
    // --url asks the node named, with --token (a wrong one is refused).
    const remote = await cli('--url', node().url, '--token', ADMIN, '--json', '--workflow', 'slow');
    expect(remote.code).toBe(0);
    expect((JSON.parse(remote.stdout) as { workflows: Array<{ name: string }> }).workflows).toEqual([
      expect.objectContaining({ name: 'slow' }),
    ]);
    const refused = await cli('--url', node().url, '--token', 'wrong-token-0123456789', 'show', 'x');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('invalid token');
    const state = await cli('--state', 'sleeping');
    expect(state.code).not.toBe(0);
    expect(state.stderr).toContain('expected one of queued, running');
  });
});
