// Starting a node from code: `startNode(config, options)` takes a resolved config or an object in the shape
// of baton.toml, with the program's own routes and components, and resolves once the node runs.
import { resolveConfig } from '../config/load.js';
import type { ConfigInput } from '../config/schema.js';
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
  /** Environment for `BATON_…` overrides when `config` is a `ConfigInput`. Default: none. */
  readonly env?: Record<string, string | undefined>;
  /** Folder that relative paths of a `ConfigInput` are resolved against. Default: the working directory. */
  readonly baseDir?: string;
  /** The program's own HTTP routes, served by the node beside Baton's (mark primary-only ones with primaryOnly). */
  readonly routes?: RouteRegistrar;
}

/**
 * Starts a node in this process. `config` is a resolved config (`loadConfig`, `resolveConfig`) or an object in
 * the shape of baton.toml (`ConfigInput`, see `defineConfig`), validated as a file is.
 */
export async function startNode(
  config: ResolvedConfig | ConfigInput,
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

function isResolved(config: ResolvedConfig | ConfigInput): config is ResolvedConfig {
  const node = (config as { node?: unknown }).node;
  return (
    typeof node === 'object' && node !== null && typeof (node as { dataDir?: unknown }).dataDir === 'string'
  );
}
