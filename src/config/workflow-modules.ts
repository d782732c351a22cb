// Workflows defined in modules (`[workflows.<name>] module = "./etl.ts"`): the node imports each at start,
// checks its definition with the same schema as a [workflows.<name>] table and resolves it, so that a
// mistake in it is a config error naming the module and the key, found before anything is opened.
import path from 'node:path';

import { ConfigError, describeError } from '../errors.js';
import { importModule } from '../util/import-module.js';
import { issuesToError } from './load.js';
import { workflowSchema } from './schema.js';
import type { ResolvedConfig, WorkflowConfig } from './types.js';
import { resolveWorkflow } from './workflows.js';

/** The config's workflows, those defined in modules loaded and resolved. */
export async function loadWorkflowModules(config: ResolvedConfig): Promise<Record<string, WorkflowConfig>> {
  const workflows: Record<string, WorkflowConfig> = {};
  for (const [name, workflow] of Object.entries(config.workflows)) {
    workflows[name] = workflow.module === undefined ? workflow : await loadOne(config, name, workflow.module);
  }
  return workflows;
}

async function loadOne(config: ResolvedConfig, name: string, module: string): Promise<WorkflowConfig> {
  const where = `workflows.${name}`;
  let loaded: unknown;
  try {
    loaded = await importModule(module);
  } catch (error) {
    throw new ConfigError(`could not load workflow module ${module}: ${describeError(error)}`, {
      key: `${where}.module`,
      ...(config.file === undefined ? {} : { file: config.file }),
    });
  }
  const definition = definitionOf(loaded);
  if (definition === undefined) {
    throw new ConfigError(
      `workflow module ${module}: expected a default export (or an export "workflow") made by defineWorkflow()`,
      { key: `${where}.module`, ...(config.file === undefined ? {} : { file: config.file }) },
    );
  }
  const result = workflowSchema.safeParse(definition);
  if (!result.success) throw issuesToError(result.error.issues, module, new Map(), ['workflows', name]);
  if (result.data.module !== undefined) {
    throw new ConfigError('a workflow module cannot name another module', {
      key: `${where}.module`,
      file: module,
    });
  }
  const resolved = resolveWorkflow(name, result.data, {
    baseDir: path.isAbsolute(module) ? path.dirname(module) : config.baseDir,
    file: module,
    schedules: config.schedules,
    where,
  });
  return { ...resolved, module };
}

function definitionOf(loaded: unknown): unknown {
  if (typeof loaded !== 'object' || loaded === null) return undefined;
  const exports = loaded as Record<string, unknown>;
  for (const candidate of [exports['default'], exports['workflow']]) {
    if (typeof candidate !== 'object' || candidate === null) continue;
    // A CommonJS module loaded through tsx: its exports object is the default.
    const inner = candidate as Record<string, unknown>;
    if ('tasks' in inner) return inner;
    for (const nested of [inner['default'], inner['workflow']]) {
      if (typeof nested === 'object' && nested !== null && 'tasks' in nested) return nested;
    }
  }
  return undefined;
}
