// Loads a component from a module named in the config (TypeScript or JavaScript, no build step). The
// module exports a component (`component` or default), or a notify-processor definition (`channels` and
// `process`, as named exports or on the default export). The config's name names the component.
import { existsSync } from 'node:fs';
import { isAbsolute } from 'node:path';

import { describeError, InvalidComponentError } from '../errors.js';
import type { Component } from './component.js';
import { componentProblem, defineComponent, isComponent } from './component.js';
import { importModule } from '../util/import-module.js';
import type { NotifyProcessFn } from './notify-processor.js';
import { createNotifyProcessor, notifyProcessorProblem } from './notify-processor.js';

type Exports = Record<string, unknown>;

/**
 * Loads the component named `name` from the module at `path`; InvalidComponentError names both.
 * `channels` (from the config) override a notify processor's own.
 */
export async function loadComponentModule(
  path: string,
  name: string,
  options: { channels?: readonly string[] | undefined } = {},
): Promise<Component> {
  const invalid = (message: string): InvalidComponentError =>
    new InvalidComponentError(name, `module ${path}: ${message}`);
  if (isAbsolute(path) && !existsSync(path)) throw invalid('not found');
  let loaded: unknown;
  try {
    loaded = await importModule(path);
  } catch (error) {
    throw invalid(`cannot load: ${describeError(error)}`);
  }
  if (!isRecord(loaded)) throw invalid('did not load as a module');
  const fallback = defaultExport(loaded);

  const exported = loaded['component'] ?? (looksLikeComponent(fallback) ? fallback : undefined);
  if (exported !== undefined) {
    if (!isRecord(exported)) throw invalid(`its component export is not an object`);
    // The config's name wins over the module's own, so logs and status use the name the user chose.
    const probe = { name, runOn: exported['runOn'], start: exported['start'], stop: exported['stop'] };
    if (!isComponent(probe)) throw invalid(componentProblem(probe) ?? 'not a component');
    return defineComponent({
      name,
      runOn: probe.runOn,
      // Called on the export, so a component written as an object or a class instance keeps its `this`.
      start: probe.start.bind(exported),
      stop: probe.stop.bind(exported),
    });
  }

  const exportedDefinition = 'channels' in loaded || 'process' in loaded ? loaded : fallback;
  const definition =
    exportedDefinition && options.channels
      ? { ...exportedDefinition, channels: [...options.channels] }
      : exportedDefinition;
  if (definition !== undefined && ('channels' in definition || 'process' in definition)) {
    const problem = notifyProcessorProblem(definition);
    if (problem !== undefined) throw invalid(problem);
    // notifyProcessorProblem checked the types of what is read here.
    const process = definition['process'] as NotifyProcessFn;
    const runOn = definition['runOn'] === 'any' ? 'any' : 'primary';
    const pollIntervalMs = definition['pollIntervalMs'];
    return createNotifyProcessor({
      name,
      channels: definition['channels'] as string[],
      runOn,
      process: (ctx, notifications) => process(ctx, notifications),
      ...(typeof pollIntervalMs === 'number' ? { pollIntervalMs } : {}),
    });
  }
  throw invalid(
    'exports no component: export a component (name, runOn, start, stop) as default or `component`, ' +
      'or `channels` and `process` for a notify processor',
  );
}

function isRecord(value: unknown): value is Exports {
  return typeof value === 'object' && value !== null;
}

/**
 * The module's default export when it is an object. A TypeScript file outside an ES-module package is
 * compiled to CommonJS by tsx, so its namespace's `default` is the whole exports object, marked
 * `__esModule`, and the author's default export sits one level down.
 */
function defaultExport(loaded: Exports): Exports | undefined {
  const outer = loaded['default'];
  if (!isRecord(outer)) return undefined;
  if (outer['__esModule'] !== true) return outer;
  const inner = outer['default'];
  return isRecord(inner) ? inner : undefined;
}

function looksLikeComponent(value: Exports | undefined): boolean {
  return value !== undefined && ('start' in value || 'stop' in value);
}
