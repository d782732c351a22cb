// What `baton init` writes: a project that runs (baton.toml, a typed handler, its first migration) in an
// empty folder or beside an existing application, whose own files it never loses: package.json gets the
// missing scripts, .gitignore the data folder, and tsconfig.json is written only where there is none.
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { parse } from 'smol-toml';

import { resolveConfig } from '../config/load.js';
import { ConfigError } from '../errors.js';

export interface ScaffoldOptions {
  /** Folder of the project; created when missing. */
  readonly dir: string;
  /** Name of the queue, of its handler file and (made safe for SQL) of its table. */
  readonly queue: string;
  /** PostgreSQL URL of the store; none: the embedded store in `.baton/`. */
  readonly storeUrl?: string | undefined;
  /** Replace baton.toml, the handler and its migration when they exist. */
  readonly force?: boolean;
}

export type FileAction = 'created' | 'replaced' | 'updated' | 'kept';

export interface FileOutcome {
  /** Relative to the project folder, with `/` separators. */
  readonly path: string;
  readonly action: FileAction;
  /** What changed, or why the file was kept. */
  readonly note?: string;
}

export type ScaffoldResult =
  | {
      readonly ok: true;
      readonly files: readonly FileOutcome[];
      readonly table: string;
      /** Packages the project does not depend on yet: runtime ones, then development ones. */
      readonly missing: { readonly dependencies: string[]; readonly devDependencies: string[] };
    }
  /** Files init would replace: nothing was written. */
  | { readonly ok: false; readonly existing: readonly string[] };

/** The scripts init adds to package.json, each unless a script of that name exists. */
export const SCRIPTS: Readonly<Record<string, string>> = {
  baton: 'baton',
  start: 'baton run',
  migrate: 'baton migrate',
  typecheck: 'tsc --noEmit',
};

const DEPENDENCIES = ['baton-runtime', 'drizzle-orm'];
const DEV_DEPENDENCIES = ['typescript', '@types/node'];
/** The data folder of the embedded store, as the template's `[node] data_dir` names it. */
const DATA_DIR = '.baton/';
const TEMPLATES = new URL('./templates/', import.meta.url);

export async function scaffold(options: ScaffoldOptions): Promise<ScaffoldResult> {
  const { dir, queue } = options;
  const table = tableName(queue);
  // In a CommonJS package (no "type": "module") a .ts file is CommonJS to TypeScript, which then sees
  // drizzle-orm's CommonJS types where Baton's are the ES module's: the handler is an ES module of its own.
  const esm = await isEsmPackage(dir);
  const handlerFile = `handlers/${queue}.${esm ? 'ts' : 'mts'}`;
  const values: Record<string, string> = {
    queue,
    handlerFile,
    queueKey: tomlKey(queue),
    table,
    tableVar: identifier(table),
    store: options.storeUrl === undefined ? '' : `\n[store]\nurl = ${JSON.stringify(options.storeUrl)}\n`,
  };
  const config = await render('baton.toml.tmpl', values);
  // The config's own rules (queue names, store URLs), with its messages, before anything is written.
  checkConfig(config, dir);

  const owned: Record<string, string> = {
    'baton.toml': config,
    [handlerFile]: await render('handler.ts.tmpl', values),
    [`handlers/migrations/${queue}/0001_init.sql`]: await render('migration.sql.tmpl', values),
  };
  const existing = [
    ...[...Object.keys(owned), `handlers/${queue}.ts`, `handlers/${queue}.mts`].filter((file) =>
      existsSync(path.join(dir, file)),
    ),
    ...(await migrationsBeside(dir, queue)),
  ];
  if (existing.length > 0 && !options.force) return { ok: false, existing: [...new Set(existing)] };

  await mkdir(dir, { recursive: true });
  const files: FileOutcome[] = [];
  for (const [file, content] of Object.entries(owned)) {
    const replaced = existsSync(path.join(dir, file));
    await write(dir, file, content);
    const note =
      file === handlerFile && !esm ? '.mts: package.json does not say "type": "module"' : undefined;
    files.push({ path: file, action: replaced ? 'replaced' : 'created', ...(note ? { note } : {}) });
  }
  files.push(await writeTsconfig(dir));
  const manifest = await mergePackageJson(dir);
  files.push(manifest.outcome);
  files.push(await ignoreDataDir(dir));
  return {
    ok: true,
    files,
    table,
    missing: {
      dependencies: DEPENDENCIES.filter((name) => !manifest.depends.has(name)),
      devDependencies: DEV_DEPENDENCIES.filter((name) => !manifest.depends.has(name)),
    },
  };
}

/** Whether `dir` has a package.json of an ES-module package; true when it has none (init writes one). */
async function isEsmPackage(dir: string): Promise<boolean> {
  const file = path.join(dir, 'package.json');
  if (!existsSync(file)) return true;
  return parseManifest(await readFile(file, 'utf8'), file)['type'] === 'module';
}

/** The queue's table: its name in lower case, with what SQL would need quoted replaced by `_`. */
export function tableName(queue: string): string {
  const name = queue.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  return /^[a-z_]/.test(name) ? name : `t_${name}`;
}

/** The table's TypeScript name: camel case (`page_views` → `pageViews`), never a word the handler uses. */
export function identifier(table: string): string {
  const name = table.replace(/_+([a-z0-9])/g, (_, next: string) => next.toUpperCase()).replace(/_+$/, '');
  return TAKEN.has(name) ? `${name}Table` : name;
}

/** JavaScript's reserved words and the names of the handler template's own imports and exports. */
const TAKEN = new Set([
  ...['await', 'break', 'case', 'catch', 'class', 'const', 'continue', 'debugger', 'default', 'delete'],
  ...['do', 'else', 'enum', 'export', 'extends', 'false', 'finally', 'for', 'function', 'if', 'implements'],
  ...['import', 'in', 'instanceof', 'interface', 'let', 'new', 'null', 'package', 'private', 'protected'],
  ...['public', 'return', 'static', 'super', 'switch', 'this', 'throw', 'true', 'try', 'typeof', 'var'],
  ...['void', 'while', 'with', 'yield', 'arguments', 'eval', 'undefined', 'NaN', 'Infinity'],
  ...['schema', 'process', 'processBatch', 'registerCommands', 'parseMessage', 'Message', 'ProcessBatchFn'],
  ...['bigserial', 'jsonb', 'pgTable', 'text', 'timestamp', 'Buffer', 'JSON', 'TypeError', 'Array'],
]);

/** A TOML key: bare when it may be, else quoted (a queue named `a.b` is one key, not two tables). */
function tomlKey(key: string): string {
  return /^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key);
}

function checkConfig(toml: string, dir: string): void {
  // The file is rendered from a template: what can be wrong in it came from the options.
  resolveConfig(parse(toml), { baseDir: dir, env: {} });
}

async function render(template: string, values: Record<string, string>): Promise<string> {
  const text = await readFile(new URL(template, TEMPLATES), 'utf8');
  return text.replace(/\{\{(\w+)\}\}/g, (_, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`template ${template}: no value for {{${name}}}`);
    return value;
  });
}

/** Migrations already in the queue's folder: a first migration beside them would be applied out of turn. */
async function migrationsBeside(dir: string, queue: string): Promise<string[]> {
  const folder = `handlers/migrations/${queue}`;
  try {
    const files = await readdir(path.join(dir, folder));
    return files.filter((file) => file.endsWith('.sql')).map((file) => `${folder}/${file}`);
  } catch {
    return [];
  }
}

async function write(dir: string, file: string, content: string): Promise<void> {
  const target = path.join(dir, file);
  await mkdir(path.dirname(target), { recursive: true });
  await writeFile(target, content);
}

async function writeTsconfig(dir: string): Promise<FileOutcome> {
  if (existsSync(path.join(dir, 'tsconfig.json'))) {
    return { path: 'tsconfig.json', action: 'kept', note: 'exists' };
  }
  await write(dir, 'tsconfig.json', await render('tsconfig.json.tmpl', {}));
  return { path: 'tsconfig.json', action: 'created' };
}

type Manifest = Record<string, unknown>;

/** Creates package.json, or adds the missing scripts to it, keeping everything else as it was. */
async function mergePackageJson(
  dir: string,
): Promise<{ outcome: FileOutcome; depends: ReadonlySet<string> }> {
  const file = path.join(dir, 'package.json');
  if (!existsSync(file)) {
    const manifest = {
      name: packageName(path.basename(path.resolve(dir))),
      version: '0.1.0',
      private: true,
      type: 'module',
      scripts: { ...SCRIPTS },
    };
    await writeFile(file, `${JSON.stringify(manifest, null, 2)}\n`);
    return { outcome: { path: 'package.json', action: 'created' }, depends: new Set() };
  }
  const text = await readFile(file, 'utf8');
  const manifest = parseManifest(text, file);
  const depends = new Set(
    ['dependencies', 'devDependencies', 'peerDependencies', 'optionalDependencies'].flatMap((field) =>
      Object.keys(objectField(manifest, field, file) ?? {}),
    ),
  );
  const scripts = objectField(manifest, 'scripts', file) ?? {};
  const added = Object.keys(SCRIPTS).filter((name) => !(name in scripts));
  const clashing = Object.keys(SCRIPTS).filter((name) => name in scripts && scripts[name] !== SCRIPTS[name]);
  const kept = clashing.length > 0 ? `; kept your ${clashing.map((name) => `"${name}"`).join(', ')}` : '';
  if (added.length === 0) {
    return { outcome: { path: 'package.json', action: 'kept', note: `scripts exist${kept}` }, depends };
  }
  for (const name of added) scripts[name] = SCRIPTS[name];
  manifest['scripts'] = scripts;
  const indent = /^[ \t]+(?=")/m.exec(text)?.[0] ?? '  ';
  await writeFile(file, `${JSON.stringify(manifest, null, indent)}${text.endsWith('\n') ? '\n' : ''}`);
  return {
    outcome: { path: 'package.json', action: 'updated', note: `scripts ${added.join(', ')}${kept}` },
    depends,
  };
}

function parseManifest(text: string, file: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`${file} is not valid JSON: ${(error as Error).message}`, { file, cause: error });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(`${file} is not a JSON object`, { file });
  }
  return value as Manifest;
}

function objectField(manifest: Manifest, field: string, file: string): Record<string, unknown> | undefined {
  const value = manifest[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(`"${field}" in ${file} is not an object`, { file, key: field });
  }
  return value as Record<string, unknown>;
}

/** npm's rules for a name: lower case, no spaces, no leading dot or underscore. */
function packageName(folder: string): string {
  const name = folder
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[._-]+/, '')
    .slice(0, 214);
  return name || 'baton-app';
}

/** Adds the data folder to .gitignore unless a line already ignores it. */
async function ignoreDataDir(dir: string): Promise<FileOutcome> {
  const file = path.join(dir, '.gitignore');
  const exists = existsSync(file) && (await stat(file)).isFile();
  const text = exists ? await readFile(file, 'utf8') : '';
  const ignored = text
    .split(/\r?\n/)
    .map((line) => line.trim().replace(/^\//, '').replace(/\/$/, ''))
    .includes(DATA_DIR.replace(/\/$/, ''));
  if (ignored) return { path: '.gitignore', action: 'kept', note: `${DATA_DIR} is ignored already` };
  if (!exists) {
    await writeFile(file, `node_modules/\n${DATA_DIR}\n`);
    return { path: '.gitignore', action: 'created' };
  }
  await writeFile(file, `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}${DATA_DIR}\n`);
  return { path: '.gitignore', action: 'updated', note: DATA_DIR };
}
