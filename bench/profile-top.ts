// Reads a V8 `.cpuprofile` (from `--cpu-prof`) and prints where the time went: the top functions by self
// time, and self time summed per package or area. `--from`/`--to` (microseconds of the monotonic clock, as
// the ingest-embedded benchmark prints them) keep only the samples of the measured window.
// Usage: node --import tsx bench/profile-top.ts <file.cpuprofile> [--from us] [--to us] [--top n]
import { readFile } from 'node:fs/promises';

import { parseOptions, UsageError } from './support.js';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
}

interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

function parseProfile(text: string): Profile {
  const value: unknown = JSON.parse(text);
  if (
    typeof value !== 'object' ||
    value === null ||
    !('nodes' in value && Array.isArray(value.nodes)) ||
    !('samples' in value && Array.isArray(value.samples)) ||
    !('timeDeltas' in value && Array.isArray(value.timeDeltas)) ||
    !('startTime' in value && typeof value.startTime === 'number')
  ) {
    throw new Error('not a V8 CPU profile');
  }
  return {
    nodes: value.nodes.filter(isProfileNode),
    startTime: value.startTime,
    samples: value.samples.filter((sample): sample is number => typeof sample === 'number'),
    timeDeltas: value.timeDeltas.filter((delta): delta is number => typeof delta === 'number'),
  };
}

function isProfileNode(node: unknown): node is ProfileNode {
  return (
    typeof node === 'object' &&
    node !== null &&
    'id' in node &&
    typeof node.id === 'number' &&
    'callFrame' in node &&
    typeof node.callFrame === 'object' &&
    node.callFrame !== null
  );
}

/** Self time in microseconds per profile node id, for samples taken within [from, to]. */
function selfTimes(profile: Profile, from: number, to: number): Map<number, number> {
  const times = new Map<number, number>();
  let at = profile.startTime;
  for (let index = 0; index < profile.samples.length; index++) {
    const delta = profile.timeDeltas[index] ?? 0;
    at += delta;
    const next = profile.timeDeltas[index + 1] ?? 0;
    if (at < from || at > to) continue;
    const id = profile.samples[index] as number;
    times.set(id, (times.get(id) ?? 0) + next);
  }
  return times;
}

/** The package (node_modules/<name>), `src/…` area, Node internals or V8 pseudo-frames a frame belongs to. */
function areaOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === '') return `(${functionName || 'native'})`;
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1] ?? url;
  if (url.startsWith('node:')) return 'node internals';
  const own = /\/(dist|src|examples)\/(.+?)\/[^/]+$/.exec(url);
  if (own) return `baton ${own[1]}/${own[2]}`;
  return url;
}

function frameName(frame: CallFrame): string {
  const where =
    frame.url === ''
      ? ''
      : ` ${frame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/(dist|src|examples)\//, '$1/')}:${frame.lineNumber + 1}`;
  return `${frame.functionName || '(anonymous)'}${where}`;
}

function printTop(title: string, totals: Map<string, number>, all: number, top: number): void {
  process.stdout.write(`${title}\n`);
  const sorted = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [name, micros] of sorted) {
    const share = ((micros / all) * 100).toFixed(1).padStart(5);
    process.stdout.write(`  ${share}%  ${(micros / 1000).toFixed(0).padStart(6)} ms  ${name}\n`);
  }
}

async function run(argv: readonly string[]): Promise<number> {
  const [file, ...args] = argv;
  if (file === undefined)
    throw new UsageError('usage: profile-top.ts <file.cpuprofile> [--from us] [--to us] [--top n]');
  const options = parseOptions(args, ['from', 'to', 'top']);
  const profile = parseProfile(await readFile(file, 'utf8'));
  const times = selfTimes(profile, Number(options.get('from') ?? 0), Number(options.get('to') ?? Infinity));
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const byFunction = new Map<string, number>();
  const byArea = new Map<string, number>();
  let all = 0;
  for (const [id, micros] of times) {
    const frame = frames.get(id);
    if (!frame) continue;
    all += micros;
    byFunction.set(frameName(frame), (byFunction.get(frameName(frame)) ?? 0) + micros);
    byArea.set(areaOf(frame), (byArea.get(areaOf(frame)) ?? 0) + micros);
  }
  const top = Number(options.get('top') ?? 25);
  process.stdout.write(`${(all / 1000).toFixed(0)} ms of samples in the window\n`);
  printTop('self time by area:', byArea, all, top);
  printTop('self time by function:', byFunction, all, top);
  return 0;
}

try {
  process.exitCode = await run(process.argv.slice(2));
} catch (error) {
  if (!(error instanceof UsageError)) throw error;
  process.stderr.write(`${error.message}\n`);
  process.exitCode = 2;
}
