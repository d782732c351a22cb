// The last words of a node process: an uncaught exception or unhandled rejection (often thrown by a
// handler outside its promise, e.g. in a timer) is logged as one structured line naming the handler calls
// that were running, then the process exits 1, as Node would, without printing the error's source frame.
// An exit while handler calls run (a handler called process.exit) is logged the same way.
import type { Logger } from '../log.js';
import type { HandlerCall } from '../queue/watchdog.js';

/** Stack frames kept in the log line, and characters per frame. */
const STACK_FRAMES = 10;
const FRAME_CHARS = 300;

/** Installs the process-wide listeners for `baton run`; returns the function that removes them. */
export function installCrashLog(log: Logger, running: () => readonly HandlerCall[]): () => void {
  let logged = false;
  const fatal = (kind: string, value: unknown): void => {
    logged = true;
    log.fatal(
      { error: summarizeError(value), handlers: running() },
      `${kind}${describeCalls(running())}: exiting (the claim of the records is recovered at the next start, with an attempt counted)`,
    );
    process.exit(1);
  };
  const onException = (error: unknown): void => fatal('uncaught exception', error);
  const onRejection = (reason: unknown): void => fatal('unhandled promise rejection', reason);
  const onExit = (code: number): void => {
    const calls = running();
    if (logged || calls.length === 0) return;
    log.fatal(
      { code, handlers: calls },
      `the process is exiting with code ${code}${describeCalls(calls)} (the claim of the records is recovered at the next start, with an attempt counted)`,
    );
  };
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  process.on('exit', onExit);
  return () => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
    process.off('exit', onExit);
  };
}

/** An error as one log field: name, message and a short stack, without source excerpts. */
export function summarizeError(value: unknown): { name: string; message: string; stack?: string } {
  if (!(value instanceof Error)) return { name: typeof value, message: String(value).slice(0, 1000) };
  const frames = (value.stack ?? '')
    .split('\n')
    .filter((line) => line.trimStart().startsWith('at '))
    .slice(0, STACK_FRAMES)
    .map((line) => line.trim().slice(0, FRAME_CHARS));
  return {
    name: value.name,
    message: value.message.slice(0, 1000),
    ...(frames.length > 0 ? { stack: frames.join('\n') } : {}),
  };
}

function describeCalls(calls: readonly HandlerCall[]): string {
  if (calls.length === 0) return '';
  const queues = [...new Set(calls.map((call) => call.queue))].map((queue) => `"${queue}"`).join(', ');
  return ` while the handler of queue ${queues} ran`;
}
