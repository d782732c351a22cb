// Running one task run: a command (/bin/sh -c in its own process group, so that a stop reaches everything
// it started) or a module's function in this process. Either way the caller gets a handle whose `done`
// settles with how the run ended, and whose stop() ends it: SIGTERM, then SIGKILL after a grace period
// for a command; the run's AbortSignal for a module, which is given the same grace period to return.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

import type { TaskConfig } from '../config/types.js';
import { describeError, InvalidTaskError } from '../errors.js';
import type { AppendedEvent } from '../events/types.js';
import type { Logger } from '../log.js';
import { importModule } from '../util/import-module.js';

/** How a run ended, as the process or the function reported it. */
export interface TaskOutcome {
  readonly state: 'succeeded' | 'failed' | 'stopped';
  readonly exitCode: number | undefined;
  readonly error: string | undefined;
}

/** Why a run is being ended from outside: a stop request, its deadline, or its node stopping. */
export type StopReason = 'stopped' | 'timeout' | 'node';

export interface RunningTask {
  readonly pid: number | undefined;
  /** Settles (never rejects) when the run has ended. */
  readonly done: Promise<TaskOutcome>;
  /** Ends the run; the first reason given wins. */
  stop(reason: StopReason): void;
}

/** What a module task's function receives. */
export interface TaskContext {
  /** The task run's id (BATON_TASK_RUN for a command). */
  readonly runId: string;
  readonly task: string;
  readonly namespace: string;
  /** The workflow execution the run belongs to (BATON_EXECUTION); undefined outside workflows. */
  readonly execution: string | undefined;
  readonly workflow: string | undefined;
  /** Aborts when the run must end: a stop request, its timeout, or its node stepping down or stopping. */
  readonly signal: AbortSignal;
  readonly log: Logger;
  /** Appends an event to the task's namespace, with {"taskRun": id} (and "execution") as its context. */
  sendEvent(key: string, value?: string | null): Promise<AppendedEvent>;
}

export type TaskFunction = (ctx: TaskContext) => unknown;

export interface LaunchOptions {
  readonly runId: string;
  readonly task: TaskConfig;
  /** The workflow and execution of the run, if it belongs to one. */
  readonly workflow?: string | undefined;
  readonly execution?: string | undefined;
  readonly log: Logger;
  /** The node's HTTP address, for BATON_URL; undefined when the node serves no HTTP API. */
  readonly url: string | undefined;
  /** How long a stopped run gets between SIGTERM (or its signal) and SIGKILL (or being given up on). */
  readonly graceMs: number;
  /** Appends an event (for a module task's sendEvent). */
  readonly sendEvent: (key: string, value: string | null | undefined) => Promise<AppendedEvent>;
}

/** Starts a run of `task`: a command or a module. */
export function launchTask(options: LaunchOptions): RunningTask {
  const running =
    options.task.command === undefined ? launchModule(options) : launchCommand(options, options.task.command);
  const { timeoutMs } = options.task;
  if (timeoutMs > 0) {
    const timer = setTimeout(() => running.stop('timeout'), timeoutMs);
    timer.unref();
    void running.done.then(() => clearTimeout(timer));
  }
  return running;
}

/** The environment a task run gets on top of the node's: where to send events, and with what context. */
export function taskEnvironment(options: LaunchOptions): Record<string, string> {
  return {
    ...(options.url !== undefined ? { BATON_URL: options.url } : {}),
    BATON_NAMESPACE: options.task.namespace,
    BATON_TASK_RUN: options.runId,
    BATON_TASK: options.task.name,
    ...(options.execution !== undefined ? { BATON_EXECUTION: options.execution } : {}),
    ...(options.workflow !== undefined ? { BATON_WORKFLOW: options.workflow } : {}),
  };
}

function launchCommand(options: LaunchOptions, command: string): RunningTask {
  const { log, graceMs } = options;
  const child = spawn('/bin/sh', ['-c', command], {
    cwd: options.task.cwd,
    env: { ...process.env, ...taskEnvironment(options) },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: a stop signals the shell and everything it started.
    detached: true,
  });
  let reason: StopReason | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  let lastError = '';
  for (const [stream, level] of [
    [child.stdout, 'info'],
    [child.stderr, 'warn'],
  ] as const) {
    if (!stream) continue;
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      if (level === 'warn') lastError = line.slice(0, 500);
      log[level]({ stream: level === 'info' ? 'stdout' : 'stderr' }, line);
    });
  }
  const signalGroup = (signal: NodeJS.Signals): void => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      child.kill(signal); // the group is gone: signal the shell alone, if it still runs
    }
  };
  const done = new Promise<TaskOutcome>((resolve) => {
    child.once('error', (error) => {
      clearTimeout(killTimer);
      resolve({ state: 'failed', exitCode: undefined, error: `could not start: ${describeError(error)}` });
    });
    child.once('exit', (code, signal) => {
      clearTimeout(killTimer);
      // Whatever the shell started in its group goes with it.
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // the group is already empty
        }
      }
      resolve(outcomeOf(reason, code, signal, options.task.timeoutMs, lastError));
    });
  });
  return {
    pid: child.pid,
    done,
    stop(why: StopReason): void {
      if (reason !== undefined) return;
      reason = why;
      signalGroup('SIGTERM');
      killTimer = setTimeout(() => signalGroup('SIGKILL'), graceMs);
      killTimer.unref();
    },
  };
}

function outcomeOf(
  reason: StopReason | undefined,
  code: number | null,
  signal: NodeJS.Signals | null,
  timeoutMs: number,
  lastError: string,
): TaskOutcome {
  const exitCode = code ?? undefined;
  if (reason === 'timeout') {
    return { state: 'failed', exitCode, error: `timed out after ${timeoutMs} ms` };
  }
  if (reason !== undefined) return { state: 'stopped', exitCode, error: undefined };
  if (code === 0) return { state: 'succeeded', exitCode: 0, error: undefined };
  const how = code === null ? `killed by ${String(signal)}` : `exit code ${code}`;
  return { state: 'failed', exitCode, error: lastError ? `${how}: ${lastError}` : how };
}

function launchModule(options: LaunchOptions): RunningTask {
  const { task, log, graceMs } = options;
  const controller = new AbortController();
  let reason: StopReason | undefined;
  let giveUp: (() => void) | undefined;
  const abandoned = new Promise<void>((resolve) => (giveUp = resolve));
  const ctx: TaskContext = {
    runId: options.runId,
    task: task.name,
    namespace: task.namespace,
    execution: options.execution,
    workflow: options.workflow,
    signal: controller.signal,
    log,
    sendEvent: (key, value) => options.sendEvent(key, value),
  };
  const running = (async (): Promise<void> => {
    const module = task.module ?? '';
    const fn = task.run ?? taskFunction(await importModule(module), module);
    await (fn as TaskFunction)(ctx);
  })();
  const done = Promise.race([
    running.then(
      (): TaskOutcome =>
        reason === undefined
          ? { state: 'succeeded', exitCode: undefined, error: undefined }
          : outcomeOf(reason, null, null, task.timeoutMs, ''),
      (error: unknown): TaskOutcome =>
        reason === undefined
          ? { state: 'failed', exitCode: undefined, error: describeError(error) }
          : outcomeOf(reason, null, null, task.timeoutMs, ''),
    ),
    abandoned.then((): TaskOutcome => {
      log.warn(`task ${task.name}: did not return within ${graceMs} ms of being stopped; given up on`);
      return outcomeOf(reason, null, null, task.timeoutMs, '');
    }),
  ]);
  return {
    pid: undefined,
    done,
    stop(why: StopReason): void {
      if (reason !== undefined) return;
      reason = why;
      controller.abort(new Error(why === 'timeout' ? 'the task run timed out' : 'the task run is stopping'));
      setTimeout(() => giveUp?.(), graceMs).unref();
    },
  };
}

/** A task module's function: its default export, or its export `run`. */
function taskFunction(namespace: unknown, module: string): TaskFunction {
  if (typeof namespace === 'object' && namespace !== null) {
    const candidates = [
      'default' in namespace ? namespace.default : undefined,
      'run' in namespace ? namespace.run : undefined,
    ];
    for (const candidate of candidates) if (typeof candidate === 'function') return candidate as TaskFunction;
    // A CommonJS module loaded through tsx: its exports object is the default.
    const inner = 'default' in namespace ? namespace.default : undefined;
    if (typeof inner === 'object' && inner !== null && 'run' in inner && typeof inner.run === 'function') {
      return inner.run as TaskFunction;
    }
  }
  throw new InvalidTaskError(
    `task module ${module}: expected a default export or an export "run" that is a function`,
  );
}
