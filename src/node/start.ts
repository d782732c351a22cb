// Starting a node from code: `startNode(config, options)` takes a resolved config or a raw object in the
// TOML shape, with the program's own routes and components, and resolves once the node runs.
import { resolveConfig } from '../config/load.js';
import type { ResolvedConfig } from '../config/types.js';
import type { Component } from '../components/component.js';
import { assertComponent } from '../components/component.js';
import type { RouteRegistrar } from '../http/server.js';
import type { Logger } from '../log.js';
import { createLogger } from '../log.js';
import { BatonNode } from './node.js';

export interface StartNodeOptions {
  /** Components registered in code, beside those of [components] in the config. */
  readonly components?: readonly Component[];
  /** Logger to use; by default one at the config's level on stderr. */
  readonly log?: Logger;
  /** Environment for `BATON_…` overrides when `config` is a raw object. Default: none. */
  readonly env?: Record<string, string | undefined>;
  /** Folder that relative paths of a raw config are resolved against. Default: the working directory. */
  readonly baseDir?: string;
  /** The program's own HTTP routes, served by the node beside Baton's (mark primary-only ones with primaryOnly). */
  readonly routes?: RouteRegistrar;
}

/** Starts a node in this process. `config` is a resolved config or a raw object in the TOML shape. */
export async function startNode(
  config: ResolvedConfig | object,
  options: StartNodeOptions = {},
): Promise<BatonNode> {
  const resolved = isResolved(config)
    ? config
    : resolveConfig(config, { baseDir: options.baseDir ?? process.cwd(), env: options.env ?? {} });
  const node = new BatonNode(
    resolved,
    options.log ??
      createLogger({ level: resolved.log.level, name: resolved.node.name, format: resolved.log.format }),
    options.routes,
    (options.components ?? []).map((component, index) => assertComponent(component, `components[${index}]`)),
  );
  await node.start();
  return node;
}

function isResolved(config: ResolvedConfig | object): config is ResolvedConfig {
  const node = (config as { node?: unknown }).node;
  return (
    typeof node === 'object' && node !== null && typeof (node as { dataDir?: unknown }).dataDir === 'string'
  );
}
