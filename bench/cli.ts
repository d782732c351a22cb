// First contact with the `baton` command: how long `--help`, `--version`, a statement on an existing embedded
// store and the first command on a new store take, and their peak memory, against `node -e 0` and a bare PGlite
// open + `select 1` measured in the same run. Each is a child process, run `--runs` times in rounds (one of each
// per round, so that a change of the machine's load hits them all); the figures are medians.
import { spawn } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { Deadline } from './support.js';
import { machineAndLoad, integerOption, now, parseOptions, ROOT, runMeasured } from './support.js';

const NAME = 'cli';
const OPTIONS = ['runs', 'timeout-s'] as const;
const DEFAULTS = { runs: 5, timeoutS: 900 } as const;
const BATON = join(ROOT, 'bin', 'baton.js');
/** One command's limit: far above what any of them takes, so that only a hang reaches it. */
const RUN_TIMEOUT_MS = 180_000;

/** Loaded before each child (`--import`): writes the child's peak RSS and CPU time when it exits. */
const USAGE_PRELOAD = `data:text/javascript,${encodeURIComponent(
  "import { writeFileSync } from 'node:fs';" +
    "process.on('exit', () => { const u = process.resourceUsage();" +
    ' writeFileSync(process.env.BENCH_USAGE_FILE, JSON.stringify({ maxRssKb: u.maxRSS, cpuUs: u.userCPUTime + u.systemCPUTime })); });',
)}`;

/** What a bare PGlite does: open the folder given as argument, `select 1`, close. */
const BARE_PGLITE = `
import { PGlite } from '@electric-sql/pglite';
const db = await PGlite.create(process.argv[1]);
await db.query('select 1');
await db.close();
`;

const VARIANTS = ['node', 'help', 'version', 'bare_pglite', 'sql', 'new_store'] as const;
type Variant = (typeof VARIANTS)[number];

const LABELS: Record<Variant, string> = {
  node: 'node -e 0',
  help: 'baton --help',
  version: 'baton --version',
  bare_pglite: 'bare PGlite open + select 1 (script)',
  sql: 'baton sql "select 1" (existing embedded store)',
  new_store: 'baton sql "select 1" (new embedded store)',
};

interface Sample {
  readonly wallS: number;
  readonly cpuS: number;
  readonly rssMb: number;
}

type Report = Partial<Record<Variant, Sample[]>>;

interface Settings {
  readonly runs: number;
  readonly timeoutS: number;
}

export async function main(args: readonly string[]): Promise<number> {
  const options = parseOptions(args, OPTIONS);
  const settings: Settings = {
    runs: integerOption(options, 'runs', DEFAULTS.runs),
    timeoutS: integerOption(options, 'timeout-s', DEFAULTS.timeoutS),
  };
  process.stdout.write(machineAndLoad());
  return runMeasured<Report>({
    timeoutS: settings.timeoutS,
    tmpPrefix: 'baton-bench-cli-',
    report: {},
    measure: (report, parent, deadline) => measure(settings, report, parent, deadline),
    print: printReport,
    printJson: (report) => {
      const median = (variant: Variant): number => round2(medianOf(report[variant], 'wallS'));
      const peak = Math.max(
        ...(['help', 'version', 'sql', 'new_store'] as const).flatMap((variant) =>
          (report[variant] ?? []).map((sample) => sample.rssMb),
        ),
      );
      process.stdout.write(
        `${JSON.stringify({
          bench: NAME,
          help_s: median('help'),
          version_s: median('version'),
          node_s: median('node'),
          sql_s: median('sql'),
          bare_pglite_s: median('bare_pglite'),
          new_store_s: median('new_store'),
          peak_rss_mb: Math.round(peak),
          help_vs_node: ratio(report, 'help', 'node'),
          version_vs_node: ratio(report, 'version', 'node'),
          sql_vs_bare_pglite: ratio(report, 'sql', 'bare_pglite'),
          new_store_vs_bare_pglite: ratio(report, 'new_store', 'bare_pglite'),
        })}\n`,
      );
    },
  });
}

async function measure(
  settings: Settings,
  report: Report,
  parent: string,
  deadline: Deadline,
): Promise<void> {
  const existing = await project(parent, 'existing');
  // The existing store: made (and migrated) by a first command, which is not counted.
  await run(['node', BATON, 'sql', 'select 1'], existing, parent, deadline);
  const storePath = join(existing, 'data', 'store');
  for (let round = 0; round < settings.runs; round++) {
    process.stdout.write(`round ${round + 1}/${settings.runs}\n`);
    const fresh = await project(parent, `new-${round}`);
    const commands: Record<Variant, { argv: string[]; cwd: string }> = {
      node: { argv: ['node', '-e', '0'], cwd: existing },
      help: { argv: ['node', BATON, '--help'], cwd: existing },
      version: { argv: ['node', BATON, '--version'], cwd: existing },
      // From the package root, where '@electric-sql/pglite' resolves.
      bare_pglite: { argv: ['node', '--input-type=module', '-e', BARE_PGLITE, storePath], cwd: ROOT },
      sql: { argv: ['node', BATON, 'sql', 'select 1'], cwd: existing },
      new_store: { argv: ['node', BATON, 'sql', 'select 1'], cwd: fresh },
    };
    for (const variant of VARIANTS) {
      const { argv, cwd } = commands[variant];
      (report[variant] ??= []).push(await run(argv, cwd, parent, deadline));
    }
    await rm(fresh, { recursive: true, force: true });
  }
}

/** A project folder: the smallest baton.toml, whose embedded store lives in data/. */
async function project(parent: string, name: string): Promise<string> {
  const dir = join(parent, name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'baton.toml'), '[node]\nname = "bench"\ndata_dir = "data"\n');
  return dir;
}

/** Runs one command to its end (exit 0 expected) and returns its wall time, CPU time and peak RSS. */
async function run(
  argv: readonly string[],
  cwd: string,
  parent: string,
  deadline: Deadline,
): Promise<Sample> {
  deadline.check();
  const usageFile = join(parent, 'usage.json');
  await rm(usageFile, { force: true });
  const args = argv.slice(1);
  const env: NodeJS.ProcessEnv = { ...withoutBatonVariables(process.env), BENCH_USAGE_FILE: usageFile };
  const started = now();
  const child = spawn(process.execPath, ['--import', USAGE_PRELOAD, ...args], {
    cwd,
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const kill = (): void => {
    if (child.pid !== undefined && child.exitCode === null) process.kill(-child.pid, 'SIGKILL');
  };
  const timer = setTimeout(kill, RUN_TIMEOUT_MS);
  deadline.signal.addEventListener('abort', kill, { once: true });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (exitCode) => resolve(exitCode));
  }).finally(() => {
    clearTimeout(timer);
    deadline.signal.removeEventListener('abort', kill);
  });
  const wallS = (now() - started) / 1000;
  deadline.check();
  if (code !== 0) throw new Error(`${argv.join(' ')} exited with ${code}:\n${stderr}`);
  const usage = JSON.parse(await readFile(usageFile, 'utf8')) as { maxRssKb: number; cpuUs: number };
  return { wallS, cpuS: usage.cpuUs / 1e6, rssMb: usage.maxRssKb / 1024 };
}

function withoutBatonVariables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([key]) => !key.startsWith('BATON_')));
}

function printReport(report: Report): void {
  const cell = (value: number, digits: number, width: number): string =>
    value.toFixed(digits).padStart(width);
  process.stdout.write(
    `\n${'command'.padEnd(48)} ${'wall s'.padStart(7)} ${'min s'.padStart(7)} ${'cpu s'.padStart(7)} ${'peak MB'.padStart(8)}\n`,
  );
  for (const variant of VARIANTS) {
    const samples = report[variant];
    if (!samples || samples.length === 0) continue;
    const fastest = Math.min(...samples.map((sample) => sample.wallS));
    const peak = Math.max(...samples.map((sample) => sample.rssMb));
    process.stdout.write(
      `${LABELS[variant].padEnd(48)} ${cell(medianOf(samples, 'wallS'), 2, 7)} ${cell(fastest, 2, 7)} ` +
        `${cell(medianOf(samples, 'cpuS'), 2, 7)} ${cell(peak, 0, 8)}\n`,
    );
  }
  const overhead = medianOf(report.sql, 'wallS') - medianOf(report.bare_pglite, 'wallS');
  process.stdout.write(
    `\nmedians: --help ${ratio(report, 'help', 'node')}x node -e 0, --version ${ratio(report, 'version', 'node')}x;` +
      ` sql ${ratio(report, 'sql', 'bare_pglite')}x bare PGlite (+${round2(overhead)} s);` +
      ` new store ${ratio(report, 'new_store', 'bare_pglite')}x bare PGlite\n`,
  );
}

function medianOf(samples: readonly Sample[] | undefined, field: 'wallS' | 'cpuS'): number {
  const sorted = (samples ?? []).map((sample) => sample[field]).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? NaN)
    : ((sorted[middle - 1] ?? NaN) + (sorted[middle] ?? NaN)) / 2;
}

function ratio(report: Report, variant: Variant, baseline: Variant): number {
  return round2(medianOf(report[variant], 'wallS') / medianOf(report[baseline], 'wallS'));
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}
