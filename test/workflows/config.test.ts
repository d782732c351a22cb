// [workflows.<name>]: what the loader accepts and how it refuses mistakes (each error names its key), `after`
// compiled into rules, the cycle check, and workflows defined in modules with defineWorkflow().
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { resolveConfig } from '../../src/config/load.js';
import { loadWorkflowModules } from '../../src/config/workflow-modules.js';
import { findCycle } from '../../src/config/workflows.js';
import { ConfigError } from '../../src/errors.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'baton-workflow-config-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const resolve = (workflows: unknown, extra: Record<string, unknown> = {}) =>
  resolveConfig({ workflows, ...extra }, { baseDir: dir, env: {} });

function refusal(workflows: unknown, extra: Record<string, unknown> = {}): ConfigError {
  try {
    resolve(workflows, extra);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('workflow config', () => {
  it('compiles after into rules and finds the tasks that start with the execution', () => {
    const config = resolve({
      etl: {
        namespace: 'etl',
        triggers: [{ on: { key: 'batch.*' } }],
        tasks: {
          a: { command: 'true' },
          b: { command: 'true', after: ['a'] },
          c: { command: 'true', after: ['a'] },
          d: { command: 'true', after: ['b', 'c'], on_lost: 'restart' },
        },
      },
    });
    const etl = config.workflows['etl'];
    expect(etl?.initial).toEqual(['a']);
    expect(etl?.onLost).toEqual({ a: 'mark', b: 'mark', c: 'mark', d: 'restart' });
    expect(etl?.triggers).toEqual([{ kind: 'event', namespace: 'etl', key: 'batch.*', value: undefined }]);
    expect(etl?.tasks['d']?.namespace).toBe('etl');
    expect(etl?.rules.map((rule) => [rule.index, rule.task, rule.source, rule.on])).toEqual([
      [0, 'b', 'tasks.b.after', { kind: 'task', task: 'a', state: 'succeeded' }],
      [1, 'c', 'tasks.c.after', { kind: 'task', task: 'a', state: 'succeeded' }],
      [
        2,
        'd',
        'tasks.d.after',
        {
          kind: 'all',
          parts: [
            { kind: 'task', task: 'b', state: 'succeeded' },
            { kind: 'task', task: 'c', state: 'succeeded' },
          ],
        },
      ],
    ]);
  });

  it('a schedule trigger is its schedule.<name>.fired event', () => {
    const config = resolve(
      { w: { triggers: [{ schedule: 'tick' }], tasks: { a: { command: 'true' } } } },
      { schedules: { tick: { every: '1s', namespace: 'clock', event: { key: 'x' } } } },
    );
    expect(config.workflows['w']?.triggers).toEqual([
      { kind: 'event', namespace: 'clock', key: 'schedule.tick.fired', value: undefined },
    ]);
  });

  it.each([
    [
      'a cycle of after',
      {
        w: {
          tasks: {
            a: { command: 'x' },
            b: { command: 'x', after: ['c'] },
            c: { command: 'x', after: ['b'] },
          },
        },
      },
      'workflows.w.tasks.b.after',
      /cycle: b → c → b|cycle: c → b → c/,
    ],
    [
      'an unknown task in after',
      { w: { tasks: { a: { command: 'x', after: ['nope'] } } } },
      'workflows.w.tasks.a.after[0]',
      /unknown task "nope": expected one of a/,
    ],
    [
      'a task after itself',
      { w: { tasks: { a: { command: 'x', after: ['a'] } } } },
      'workflows.w.tasks.a.after[0]',
      /cannot run after itself/,
    ],
    [
      'an unknown task in a rule',
      { w: { tasks: { a: { command: 'x' } }, rules: [{ on: { key: 'k' }, action: 'start', task: 'b' }] } },
      'workflows.w.rules[0].task',
      /unknown task "b"/,
    ],
    [
      'an unknown task in a condition',
      {
        w: {
          tasks: { a: { command: 'x' } },
          rules: [{ on: { any: [{ task: 'zz', state: 'failed' }] }, action: 'stop', task: 'a' }],
        },
      },
      'workflows.w.rules[0].on.any[0].task',
      /unknown task "zz"/,
    ],
    [
      'no task that starts with the execution',
      {
        w: {
          tasks: { a: { command: 'x', after: ['b'] }, b: { command: 'x' } },
          rules: [{ on: { key: 'k' }, action: 'start', task: 'b' }],
        },
      },
      'workflows.w.tasks',
      /no task starts when an execution starts/,
    ],
    ['no task at all', { w: {} }, 'workflows.w.tasks', /at least one task/],
    [
      'an unknown schedule',
      { w: { triggers: [{ schedule: 'nope' }], tasks: { a: { command: 'x' } } } },
      'workflows.w.triggers[0].schedule',
      /unknown schedule "nope"/,
    ],
    [
      'a value without a key',
      {
        w: {
          tasks: { a: { command: 'x' } },
          rules: [{ on: { task: 'a', state: 'failed', value: 'v' }, action: 'stop', task: 'a' }],
        },
      },
      'workflows.w.rules[0].on.value',
      /"value" goes with "key"/,
    ],
    [
      'a key and a task in one condition',
      {
        w: {
          tasks: { a: { command: 'x' } },
          rules: [{ on: { key: 'k', task: 'a', state: 'failed' }, action: 'stop', task: 'a' }],
        },
      },
      'workflows.w.rules[0].on',
      /exactly one of "key", "task", "all" or "any"/,
    ],
    [
      'a task state that does not exist',
      {
        w: {
          tasks: { a: { command: 'x' } },
          rules: [{ on: { task: 'a', state: 'done' }, action: 'stop', task: 'a' }],
        },
      },
      'workflows.w.rules[0].on.state',
      /expected "pending", "running"/,
    ],
    [
      'a task with neither command nor module',
      { w: { tasks: { a: { timeout_ms: 5 } } } },
      'workflows.w.tasks.a',
      /exactly one of "command" or "module"/,
    ],
    [
      'tasks beside module',
      { w: { module: './w.ts', tasks: { a: { command: 'x' } } } },
      'workflows.w.tasks',
      /cannot be set beside "module"/,
    ],
    [
      'a misspelt key',
      { w: { tasks: { a: { command: 'x' } }, trigers: [] } },
      'workflows.w.trigers',
      /trigers/,
    ],
  ])('refuses %s, naming the key', (_what, workflows, key, message) => {
    const error = refusal(workflows);
    expect(error.key).toBe(key);
    expect(error.message).toMatch(message);
  });

  it('needs the event log', () => {
    const error = refusal({ w: { tasks: { a: { command: 'x' } } } }, { events: { enabled: false } });
    expect(error.key).toBe('events.enabled');
  });

  it('findCycle returns the cycle as a path, or nothing for a DAG', () => {
    expect(findCycle({ a: [], b: ['a'], c: ['a'], d: ['b', 'c'] })).toBeUndefined();
    expect(findCycle({ a: ['c'], b: ['a'], c: ['b'] })).toHaveLength(4);
  });
});

describe('workflows defined in modules', () => {
  const index = fileURLToPath(new URL('../../src/index.ts', import.meta.url));

  it('loads a defineWorkflow() default export, with function tasks', async () => {
    await writeFile(
      path.join(dir, 'etl.ts'),
      `import { defineWorkflow } from ${JSON.stringify(index)};
export default defineWorkflow({
  namespace: 'coded',
  triggers: [{ on: { key: 'go' } }],
  tasks: {
    first: { run: async (ctx) => { await ctx.sendEvent('first.done'); } },
    second: { command: 'echo second', after: ['first'] },
  },
});
`,
    );
    const config = resolve({ etl: { module: './etl.ts' } });
    expect(config.workflows['etl']?.tasks).toEqual({});
    const workflows = await loadWorkflowModules(config);
    const etl = workflows['etl'];
    expect(etl?.namespace).toBe('coded');
    expect(etl?.initial).toEqual(['first']);
    expect(typeof etl?.tasks['first']?.run).toBe('function');
    expect(etl?.tasks['second']?.cwd).toBe(dir);
    expect(etl?.module).toBe(path.join(dir, 'etl.ts'));
  });

  it('refuses a bad definition with the module and the key', async () => {
    await writeFile(
      path.join(dir, 'bad.ts'),
      `export default { tasks: { a: { command: 'x', after: ['ghost'] } } };\n`,
    );
    const config = resolve({ bad: { module: './bad.ts' } });
    const error = await loadWorkflowModules(config).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).key).toBe('workflows.bad.tasks.a.after[0]');
    expect((error as ConfigError).message).toContain('bad.ts');
  });

  it('refuses a module without a definition, and one that does not load', async () => {
    await writeFile(path.join(dir, 'empty.ts'), `export const nothing = 1;\n`);
    const empty = await loadWorkflowModules(resolve({ e: { module: './empty.ts' } })).catch(
      (error: unknown) => error,
    );
    expect((empty as ConfigError).key).toBe('workflows.e.module');
    const missing = await loadWorkflowModules(resolve({ m: { module: './missing.ts' } })).catch(
      (error: unknown) => error,
    );
    expect(missing).toBeInstanceOf(ConfigError);
    expect((missing as ConfigError).key).toBe('workflows.m.module');
  });
});
