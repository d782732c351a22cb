// Components named in the config ([components.<name>] module = "…"): a module that cannot be loaded, or
// that is no component, is a config error naming the key (exit code 2), found before anything starts.
import type { ComponentConfig } from '../config/types.js';
import { ConfigError, InvalidComponentError } from '../errors.js';
import type { Component } from './component.js';
import { loadComponentModule } from './load.js';

export async function loadConfiguredComponent(config: ComponentConfig, file?: string): Promise<Component> {
  try {
    return await loadComponentModule(config.module, config.name, { channels: config.channels });
  } catch (error) {
    if (!(error instanceof InvalidComponentError)) throw error;
    throw new ConfigError(error.message, {
      key: `components.${config.name}.module`,
      ...(file ? { file } : {}),
      cause: error,
    });
  }
}
