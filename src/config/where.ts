// Small helpers the config's resolvers share: where a module is, and where an error points.
import path from 'node:path';

/** Paths (`./h.ts`, `/abs/h.js`) are made absolute; anything else is a package name for the module resolver. */
export function resolveHandler(handler: string, baseDir: string): string {
  return handler.startsWith('.') || path.isAbsolute(handler) ? path.resolve(baseDir, handler) : handler;
}

/** The `file` of a ConfigError's options, when a file was read. */
export function optionalFile(file: string | undefined): { file?: string } {
  return file === undefined ? {} : { file };
}
