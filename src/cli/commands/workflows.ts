// Commands on workflows: `workflows` lists them (queued and running executions) and the latest executions,
// `workflows show <execution>` one execution with its tasks in DAG order and their runs, `workflows start
// <name>` asks for a new execution (and with --wait follows it to its end), `workflows stop <execution>`
// asks the primary to stop one. Through the node at --url, else as every command reaches the store.
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';

import type { Admin } from '../../admin/admin.js';
import { UnknownExecutionError } from '../../errors.js';
import type { ExecutionState } from '../../tasks/execution-states.js';
import { EXECUTION_STATES, isExecutionState } from '../../tasks/execution-states.js';
import type { Execution } from '../../tasks/executions.js';
import type { ExecutionDetail, StartedExecution, WorkflowStatus } from '../../tasks/workflow-status.js';
import { sleep } from '../../util/sleep.js';
import type { CliContext } from '../context.js';
import { formatTable } from '../output.js';
import { parseLimit } from './tasks.js';

/** How long `start --wait` waits for the primary to create the execution before it gives up. */
const CREATE_WAIT_MS = 120_000;
const POLL_MS = 500;

interface TargetOptions {
  url?: string;
  token?: string;
}

interface ListOptions {
  json?: boolean;
  workflow?: string;
  state?: ExecutionState;
  limit: number;
}

export function registerWorkflowCommands(program: Command, ctx: CliContext): void {
  const workflows = program
    .command('workflows')
    .description('list workflows (queued and running executions), then the latest executions, newest first')
    .option('--json', 'print as JSON')
    .option('--workflow <name>', 'only this workflow and its executions')
    .option('--state <state>', `only executions in this state (${EXECUTION_STATES.join(', ')})`, parseState)
    .option('--limit <n>', 'at most this many executions', parseLimit, 50)
    .option(
      '--url <url>',
      "a node's base URL (default: the node that owns the embedded store, else the store)",
    )
    .option('--token <token>', 'bearer token for --url (default: BATON_TOKEN)')
    .action(async (options: ListOptions, command: Command) => {
      const listing = await withAdmin(ctx, command, (admin) =>
        admin.workflows({
          limit: options.limit,
          ...(options.workflow ? { workflow: options.workflow } : {}),
          ...(options.state ? { state: options.state } : {}),
        }),
      );
      if (options.json) {
        const { workflowListingJson } = await import('../../tasks/workflow-wire.js');
        return ctx.printJson(workflowListingJson(listing));
      }
      ctx.print(listing.workflows.length === 0 ? 'no workflow' : workflowsTable(listing.workflows));
      ctx.print('');
      ctx.print(listing.executions.length === 0 ? 'no execution' : executionsTable(listing.executions));
    });

  workflows
    .command('show')
    .description('show an execution: its state, then its tasks in DAG order with their runs')
    .argument('<execution>', 'the id of the execution')
    .option('--json', 'print as JSON')
    .action(async (id: string, _options: unknown, command: Command) => {
      const detail = await withAdmin(ctx, command, (admin) => admin.execution(id));
      if (wantsJson(command)) {
        const { executionDetailJson } = await import('../../tasks/workflow-wire.js');
        return ctx.printJson(executionDetailJson(detail));
      }
      printExecution(ctx, detail);
    });

  workflows
    .command('start')
    .description('start an execution of a workflow (on the primary); prints its id')
    .argument('<name>', 'the workflow')
    .option('--id <id>', 'the id of the new execution (default: a new uuid)')
    .option('--wait', 'wait until it ended: exit 0 when it succeeded, 1 otherwise')
    .option('--json', 'print as JSON')
    .action(async (name: string, options: { id?: string; wait?: boolean }, command: Command) => {
      const json = wantsJson(command);
      await withAdmin(ctx, command, async (admin) => {
        const started = await admin.startWorkflow(name, { id: options.id });
        const { startedJson, executionJson } = await import('../../tasks/workflow-wire.js');
        if (!options.wait) {
          return json ? ctx.printJson(startedJson(started)) : ctx.print(started.execution);
        }
        if (!json) ctx.print(started.execution);
        const ended = await waitForEnd(admin, started);
        if (json) {
          ctx.printJson({
            ...startedJson(started),
            ended: ended.execution ? executionJson(ended.execution) : null,
          });
        } else if (ended.execution) {
          const { error } = ended.execution;
          ctx.print(
            `execution ${started.execution} of ${name} ${ended.execution.state}${error ? `: ${error}` : ''}`,
          );
        }
        if (!ended.execution) ctx.io.stderr.write(`baton: ${ended.why}\n`);
        if (ended.execution?.state !== 'succeeded') process.exitCode = 1;
      });
    });

  workflows
    .command('stop')
    .description('stop an execution (the primary stops its runs, then ends it stopped)')
    .argument('<execution>', 'the id of the execution')
    .action(async (id: string, _options: unknown, command: Command) => {
      const { execution, requested } = await withAdmin(ctx, command, (admin) => admin.stopExecution(id));
      ctx.print(
        requested
          ? `stop requested for execution ${execution.id} of ${execution.workflow} (${execution.state})`
          : `execution ${execution.id} of ${execution.workflow} already ended: ${execution.state}`,
      );
    });
}

/** --json after a subcommand is taken by `workflows` itself, which has it too: either asks for JSON. */
function wantsJson(command: Command): boolean {
  return command.optsWithGlobals<{ json?: boolean }>().json === true;
}

/** Runs `fn` with the admin of the node at --url when given, else with the config's. */
async function withAdmin<T>(ctx: CliContext, command: Command, fn: (admin: Admin) => Promise<T>): Promise<T> {
  const target = command.optsWithGlobals<TargetOptions>();
  if (target.url === undefined) return ctx.withAdmin(fn);
  const { HttpAdmin } = await import('../../admin/http-admin.js');
  const admin = new HttpAdmin(target.url, { token: target.token ?? ctx.io.env['BATON_TOKEN'] });
  try {
    return await fn(admin);
  } finally {
    await admin.close();
  }
}

/**
 * Follows a started execution until it ended. It is not created when the primary's rule engine passed its
 * start event without creating it (skipped: over_limit = "skip"), or when no primary took the event in time.
 */
async function waitForEnd(
  admin: Admin,
  started: StartedExecution,
): Promise<{ execution: Execution; why?: undefined } | { execution?: undefined; why: string }> {
  const [{ RULES_LISTENER }, { ALL_NAMESPACES }] = await Promise.all([
    import('../../tasks/engine.js'),
    import('../../events/log.js'),
  ]);
  const events = await admin.openEvents();
  const deadline = Date.now() + CREATE_WAIT_MS;
  const what = `execution ${started.execution} of ${started.workflow}`;
  for (;;) {
    // The engine commits its offset with the executions it creates: read first, then look for it.
    const applied = await events.listenerOffset(ALL_NAMESPACES, RULES_LISTENER).catch(() => undefined);
    const execution = await admin
      .execution(started.execution)
      .then((detail) => detail.execution)
      .catch((error: unknown) => {
        if (error instanceof UnknownExecutionError) return undefined;
        throw error;
      });
    if (execution && execution.state !== 'queued' && execution.state !== 'running') return { execution };
    if (!execution && applied !== undefined && applied >= started.offset) {
      return {
        why:
          `${what} was not created: the primary passed its start event (offset ${started.offset}) without ` +
          'creating it (skipped, with over_limit = "skip" and max_concurrent executions running; or the ' +
          "workflow is not in the primary's config)",
      };
    }
    if (!execution && Date.now() > deadline) {
      return {
        why:
          `${what} was not created within ${CREATE_WAIT_MS / 1000} s of its start event (offset ` +
          `${started.offset}): is a node running as the group's primary?`,
      };
    }
    await sleep(POLL_MS);
  }
}

function workflowsTable(workflows: readonly WorkflowStatus[]): string {
  return formatTable(
    ['workflow', 'namespace', 'tasks', 'max concurrent', 'queued', 'running'],
    workflows.map((workflow) => [
      workflow.name,
      workflow.namespace,
      workflow.tasks.map((task) => task.name).join(', '),
      workflow.maxConcurrent === 0 ? '-' : `${workflow.maxConcurrent} (${workflow.overLimit})`,
      String(workflow.queued),
      String(workflow.running),
    ]),
  );
}

function executionsTable(executions: readonly Execution[]): string {
  return formatTable(
    ['execution', 'workflow', 'state', 'tasks', 'started', 'ended', 'trigger', 'error'],
    executions.map((execution) => [
      execution.id,
      execution.workflow,
      stateText(execution),
      Object.entries(execution.view.tasks)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([task, state]) => `${task}:${state}`)
        .join(' '),
      execution.startedAt?.toISOString() ?? '-',
      execution.endedAt?.toISOString() ?? '-',
      `${execution.triggerKey} @${execution.triggerOffset}`,
      execution.error ?? '',
    ]),
  );
}

function printExecution(ctx: CliContext, detail: ExecutionDetail): void {
  const { execution, runs, dag } = detail;
  const iso = (time: Date | undefined): string => time?.toISOString() ?? '-';
  ctx.print(
    `execution ${execution.id} of ${execution.workflow} (namespace ${execution.namespace}): ${stateText(execution)}`,
  );
  ctx.print(
    `  trigger  ${execution.triggerKey} @${execution.triggerOffset} (term ${execution.term}, node ${execution.node})`,
  );
  ctx.print(
    `  created  ${iso(execution.createdAt)}  started ${iso(execution.startedAt)}  ended ${iso(execution.endedAt)}`,
  );
  if (execution.error !== undefined) ctx.print(`  error    ${execution.error}`);
  ctx.print('');
  // Tasks in DAG order, then any task with runs that this config no longer names.
  const tasks = [
    ...dag.map((task) => ({ name: task.name, after: task.after.join(', '), state: task.state })),
    ...[...new Set(runs.map((run) => run.task))]
      .filter((task) => !dag.some((entry) => entry.name === task))
      .map((task) => ({ name: task, after: '?', state: execution.view.tasks[task] })),
  ];
  const rows = tasks.flatMap((task) => {
    const own = runs.filter((run) => run.task === task.name);
    const head = [task.name, task.state ?? '-', task.after || '-'];
    if (own.length === 0) return [[...head, '-', '', '', '', '', '']];
    return own.map((run, index) => [
      ...(index === 0 ? head : ['', '', '']),
      run.id,
      run.state,
      run.exitCode === undefined ? '-' : String(run.exitCode),
      iso(run.startedAt),
      iso(run.endedAt),
      run.error ?? '',
    ]);
  });
  ctx.print(
    rows.length === 0
      ? 'no task (the workflow is not in this config, and no run)'
      : formatTable(
          ['task', 'state', 'after', 'run', 'run state', 'exit', 'started', 'ended', 'error'],
          rows,
        ),
  );
}

function stateText(execution: Execution): string {
  const open = execution.state === 'queued' || execution.state === 'running';
  return execution.stopRequested && open ? `${execution.state} (stopping)` : execution.state;
}

function parseState(value: string): ExecutionState {
  if (!isExecutionState(value)) {
    throw new InvalidArgumentError(`expected one of ${EXECUTION_STATES.join(', ')}`);
  }
  return value;
}
