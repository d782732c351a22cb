// Commands on task runs: `tasks` lists them (newest first) and `tasks stop <run>` asks the primary to stop
// one. Both go through the node that owns the embedded store when one runs, else to the store itself.
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';

import type { TaskRun } from '../../tasks/runs.js';
import type { TaskRunState } from '../../tasks/states.js';
import { isTaskRunState, TASK_RUN_STATES } from '../../tasks/states.js';
import type { CliContext } from '../context.js';
import { formatTable } from '../output.js';

interface ListOptions {
  json?: boolean;
  state?: TaskRunState;
  task?: string;
  limit: number;
}

export function registerTaskCommands(program: Command, ctx: CliContext): void {
  const tasks = program
    .command('tasks')
    .description('list task runs, newest first (state, exit code, trigger)')
    .option('--json', 'print as JSON')
    .option('--state <state>', `only runs in this state (${TASK_RUN_STATES.join(', ')})`, parseState)
    .option('--task <name>', 'only runs of this task')
    .option('--limit <n>', 'at most this many runs', parseLimit, 50)
    .action(async (options: ListOptions) => {
      const runs = await ctx.withAdmin((admin) =>
        admin.taskRuns({
          limit: options.limit,
          ...(options.state ? { state: options.state } : {}),
          ...(options.task ? { task: options.task } : {}),
        }),
      );
      if (options.json) {
        const { taskRunJson } = await import('../../tasks/wire.js');
        return ctx.printJson({ runs: runs.map(taskRunJson) });
      }
      ctx.print(runs.length === 0 ? 'no task run' : runsTable(runs));
    });

  tasks
    .command('stop')
    .description('stop a task run (the primary stops it: SIGTERM, then SIGKILL after a grace period)')
    .argument('<run>', 'the id of the run')
    .action(async (id: string) => {
      const { run, requested } = await ctx.withAdmin((admin) => admin.stopTaskRun(id));
      ctx.print(
        requested
          ? `stop requested for run ${run.id} of ${run.task} (${run.state})`
          : `run ${run.id} of ${run.task} already ended: ${run.state}`,
      );
    });
}

function runsTable(runs: readonly TaskRun[]): string {
  return formatTable(
    ['run', 'task', 'state', 'exit', 'started', 'ended', 'node', 'trigger', 'error'],
    runs.map((run) => [
      run.id,
      run.task,
      run.stopRequested && (run.state === 'running' || run.state === 'pending')
        ? `${run.state} (stopping)`
        : run.state,
      run.exitCode === undefined ? '-' : String(run.exitCode),
      run.startedAt?.toISOString() ?? '-',
      run.endedAt?.toISOString() ?? '-',
      run.node ?? '-',
      `${run.triggerKey} @${run.triggerOffset}${run.attempt > 1 ? ` (attempt ${run.attempt})` : ''}`,
      run.error ?? '',
    ]),
  );
}

function parseState(value: string): TaskRunState {
  if (!isTaskRunState(value)) {
    throw new InvalidArgumentError(`expected one of ${TASK_RUN_STATES.join(', ')}`);
  }
  return value;
}

export function parseLimit(value: string): number {
  const limit = Number(value);
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > 10_000) {
    throw new InvalidArgumentError('expected an integer from 1 to 10000');
  }
  return limit;
}
