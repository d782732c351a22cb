// Imports a plugin module (a handler or a component) named by path, without a build step: TypeScript goes
// through tsx, JavaScript as it is, and a bare name is a package for the module resolver.
import { extname, isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';

const TYPESCRIPT = new Set(['.ts', '.mts', '.cts', '.tsx']);

/**
 * Imports `path`: an absolute file path, or a package specifier. tsx loads a TypeScript file beside
 * baton.toml whatever the nearest package.json says, so such a module needs no package.json of its own
 * (outside an ES-module package its namespace's `default` is then the whole CommonJS exports object).
 */
export async function importModule(path: string): Promise<unknown> {
  if (!isAbsolute(path)) return import(path);
  const url = pathToFileURL(path).href;
  if (!TYPESCRIPT.has(extname(path))) return import(url);
  const { tsImport } = await import('tsx/esm/api');
  return (await tsImport(url, import.meta.url)) as unknown;
}
