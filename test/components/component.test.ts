// The component contract's checks, and loading components from TypeScript and JavaScript modules.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { assertComponent, defineComponent } from '../../src/components/component.js';
import type { Component } from '../../src/components/component.js';
import { loadComponentModule } from '../../src/components/load.js';
import { InvalidComponentError } from '../../src/errors.js';

function thrown(fn: () => unknown): InvalidComponentError {
  try {
    fn();
  } catch (error) {
    if (error instanceof InvalidComponentError) return error;
    throw error;
  }
  throw new Error('expected an InvalidComponentError');
}

describe('defineComponent and assertComponent', () => {
  it('returns a frozen copy whose methods keep their this', async () => {
    const definition = {
      name: 'counter',
      runOn: 'any' as const,
      count: 0,
      start() {
        this.count += 1;
      },
      stop() {},
    };
    const component = defineComponent(definition);
    expect(Object.isFrozen(component)).toBe(true);
    expect(component).not.toBe(definition);
    expect(Object.keys(component).sort()).toEqual(['name', 'runOn', 'start', 'stop']);
    await component.start({} as Parameters<Component['start']>[0]);
    expect(definition.count).toBe(1);

    // drain is optional; when given, it is kept, bound too.
    const withDrain = {
      ...definition,
      drained: false,
      drain() {
        this.drained = true;
      },
    };
    const draining = defineComponent(withDrain);
    expect(Object.keys(draining).sort()).toEqual(['drain', 'name', 'runOn', 'start', 'stop']);
    await draining.drain?.();
    expect(withDrain.drained).toBe(true);
  });

  it('names the component in every error', () => {
    const base = { name: 'river', runOn: 'primary', start() {}, stop() {} };
    const cases: Array<[unknown, RegExp]> = [
      [
        { ...base, runOn: 'leader' },
        /invalid component river: runOn must be 'primary' or 'any', got "leader"/,
      ],
      [{ ...base, runOn: undefined }, /invalid component river: runOn must be/],
      [{ ...base, start: 'go' }, /invalid component river: start must be a function/],
      [{ ...base, stop: undefined }, /invalid component river: stop must be a function/],
      [{ ...base, drain: true }, /invalid component river: drain must be a function when it is given/],
      [{ ...base, name: 'has space' }, /invalid component has space: name "has space" may hold only/],
    ];
    for (const [value, message] of cases) {
      const error = thrown(() => assertComponent(value, 'config-name'));
      expect(error.message).toMatch(message);
      expect(error.message).toContain('(from config-name)');
      expect(error.code).toBe('INVALID_COMPONENT');
    }
    // No usable name of its own: the caller's name for it.
    expect(thrown(() => assertComponent({ ...base, name: '' }, 'search')).message).toBe(
      'invalid component search: name must be a non-empty string',
    );
    expect(thrown(() => assertComponent(null, 'search')).component).toBe('search');
    expect(thrown(() => assertComponent(42, 'search')).message).toContain('got number');
    // @ts-expect-error a definition without stop is not a component
    expect(thrown(() => defineComponent({ name: 'half', runOn: 'any', start() {} })).component).toBe('half');
    expect(assertComponent(base, 'river')).toBe(base);
  });
});

describe('loadComponentModule', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'baton-components-'));
    const files: Record<string, string> = {
      'default.ts': [
        "import type { ComponentContext } from '" + join(process.cwd(), 'src/components/component.js') + "';",
        'class Cleaner {',
        "  readonly name = 'own-name';",
        "  readonly runOn = 'primary' as const;",
        '  started = 0;',
        '  start(_ctx: ComponentContext): void { this.started += 1; }',
        '  stop(): void {}',
        '}',
        'export const cleaner = new Cleaner();',
        'export default cleaner;',
      ].join('\n'),
      'named.mjs': "export const component = { name: 'x', runOn: 'any', start() {}, stop() {} };\n",
      'notify.ts': [
        "export const channels = ['jobs'];",
        "export const runOn = 'any';",
        'export const pollIntervalMs = 250;',
        'export async function process(): Promise<void> {}',
      ].join('\n'),
      'notify-default.mjs': "export default { channels: ['a', 'b'], async process() {} };\n",
      'nothing.ts': 'export const answer = 42;\n',
      'bad-run-on.mjs': "export default { name: 'x', runOn: 'leader', start() {}, stop() {} };\n",
      'bad-channels.ts': 'export const channels = [];\nexport async function process(): Promise<void> {}\n',
      'broken.ts': 'export const = ;\n',
    };
    for (const [file, text] of Object.entries(files)) await writeFile(join(dir, file), text);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('loads a default-exported component from TypeScript, under the config name, keeping its this', async () => {
    const component = await loadComponentModule(join(dir, 'default.ts'), 'cleanup');
    expect(component.name).toBe('cleanup');
    expect(component.runOn).toBe('primary');
    // A class method called without its instance would throw here (`this` is undefined in a class).
    expect(() => component.start({} as Parameters<Component['start']>[0])).not.toThrow();
  });

  it('loads a `component` export from JavaScript', async () => {
    const component = await loadComponentModule(join(dir, 'named.mjs'), 'named');
    expect([component.name, component.runOn]).toEqual(['named', 'any']);
  });

  it('turns channels and process exports into a notify processor', async () => {
    const named = await loadComponentModule(join(dir, 'notify.ts'), 'jobs');
    expect([named.name, named.runOn]).toEqual(['jobs', 'any']);
    const fromDefault = await loadComponentModule(join(dir, 'notify-default.mjs'), 'ab');
    expect([fromDefault.name, fromDefault.runOn]).toEqual(['ab', 'primary']);
  });

  it('names the module and the component when the module is not a component', async () => {
    const cases: Array<[string, RegExp]> = [
      ['nothing.ts', /exports no component/],
      ['bad-run-on.mjs', /runOn must be 'primary' or 'any', got "leader"/],
      ['bad-channels.ts', /channels must be a non-empty list/],
      ['broken.ts', /cannot load/],
      ['missing.ts', /not found/],
    ];
    for (const [file, message] of cases) {
      const path = join(dir, file);
      const error = await loadComponentModule(path, 'thing').then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(InvalidComponentError);
      expect(String(error)).toContain(`invalid component thing: module ${path}`);
      expect(String(error)).toMatch(message);
    }
  });
});
