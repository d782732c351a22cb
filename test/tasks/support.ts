// Helpers of the task tests: a project whose tasks append a line per run to out.txt (so that a test counts
// how often each task really ran), and polling with a deadline.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

import type { TempProject } from '../support/process.js';

/**
 * Sends one event to the node that runs the task, as a client inside a task run does: to BATON_URL, in
 * BATON_NAMESPACE, with the run (and, in a workflow, BATON_EXECUTION) in its context.
 * Usage: node send-event.mjs <key> [value]
 */
const SEND_EVENT_SCRIPT = `
const [key, value] = process.argv.slice(2);
const response = await fetch(process.env.BATON_URL + '/v1/events', {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({
    key,
    ...(value === undefined ? {} : { value }),
    namespace: process.env.BATON_NAMESPACE,
    context: JSON.stringify({
      taskRun: process.env.BATON_TASK_RUN,
      ...(process.env.BATON_EXECUTION ? { execution: process.env.BATON_EXECUTION } : {}),
    }),
  }),
});
if (response.status !== 201) {
  console.error('POST /v1/events answered ' + response.status + ': ' + (await response.text()));
  process.exit(1);
}
`;

/** Writes send-event.mjs into `project` and returns the shell command that runs it (add the key). */
export async function sendEventCommand(project: TempProject): Promise<string> {
  const script = await project.write('send-event.mjs', SEND_EVENT_SCRIPT);
  return `${JSON.stringify(process.execPath)} ${JSON.stringify(script)}`;
}

export const NOTIFY_MODULE = fileURLToPath(new URL('./fixtures/notify-task.ts', import.meta.url));

/** TOML basic string of `text`. */
export function tomlString(text: string): string {
  return JSON.stringify(text);
}

/** The lines of `file` (none when it does not exist). */
export async function lines(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').filter((line) => line.length > 0);
}

/** How many lines of `file` start with `word` and a space. */
export async function countRuns(file: string, word: string): Promise<number> {
  return (await lines(file)).filter((line) => line.startsWith(`${word} `)).length;
}

export async function waitFor<T>(
  probe: () => Promise<T | undefined | false>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
