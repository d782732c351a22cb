// The event log over HTTP on the embedded store: appends of small events to a node (child process), in
// batches and one per request, against a raw INSERT of the same rows into a PGlite with Baton's schema in this
// process; then the latency from publish (POST /v1/events) to a listener on the SSE stream, at a steady rate.
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { mkdir } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';

import { NotificationClient } from '../src/events/client.js';
import { createLogger } from '../src/log.js';
import { applyMigrations, builtinMigrations } from '../src/store/migrate.js';
import { openPgliteStore } from '../src/store/pglite.js';
import type { NodeChild, Deadline } from './support.js';
import {
  machineAndLoad,
  formatRate,
  freePort,
  integerOption,
  now,
  parseOptions,
  pause,
  request,
  startNodeChild,
  stopNodeChild,
  waitForReady,
  runMeasured,
} from './support.js';

const NAME = 'events';
const OPTIONS = [
  'events',
  'batch',
  'in-flight',
  'single-in-flight',
  'rate',
  'latency-s',
  'timeout-s',
] as const;
const DEFAULTS = {
  events: 100_000,
  batch: 1_000,
  inFlight: 2,
  singleInFlight: 8,
  rate: 1_000,
  latencyS: 10,
  timeoutS: 900,
} as const;
/** Latencies of the first second are left out: connections and JIT warm up then. */
const WARMUP_MS = 1_000;

interface Settings {
  readonly events: number;
  readonly batch: number;
  readonly inFlight: number;
  readonly singleInFlight: number;
  readonly rate: number;
  readonly latencyS: number;
  readonly timeoutS: number;
}

interface BenchEvent {
  readonly key: string;
  readonly value: string;
  readonly namespace: string;
  readonly sender: string;
}

interface Report {
  baselineBatched?: number;
  baselineSingle?: number;
  batched?: number;
  single?: number;
  latency?: Latency;
}

interface Latency {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly samples: number;
  readonly sent: number;
}

export async function main(args: readonly string[]): Promise<number> {
  const settings = readSettings(args);
  process.stdout.write(machineAndLoad());
  return runMeasured<Report>({
    timeoutS: settings.timeoutS,
    tmpPrefix: 'baton-bench-events-',
    report: {},
    measure: (report, parent, deadline) => measure(settings, report, parent, deadline),
    print: (report) => printReport(settings, report),
    printJson: (report) =>
      process.stdout.write(
        `${JSON.stringify({
          bench: NAME,
          append_batched_per_s: Math.round(report.batched ?? 0),
          append_single_per_s: Math.round(report.single ?? 0),
          baseline_per_s: Math.round(report.baselineBatched ?? 0),
          latency_p50_ms: round2(report.latency?.p50 ?? NaN),
          latency_p99_ms: round2(report.latency?.p99 ?? NaN),
        })}\n`,
      ),
  });
}

function readSettings(args: readonly string[]): Settings {
  const options = parseOptions(args, OPTIONS);
  return {
    events: integerOption(options, 'events', DEFAULTS.events),
    batch: integerOption(options, 'batch', DEFAULTS.batch),
    inFlight: integerOption(options, 'in-flight', DEFAULTS.inFlight),
    singleInFlight: integerOption(options, 'single-in-flight', DEFAULTS.singleInFlight),
    rate: integerOption(options, 'rate', DEFAULTS.rate),
    latencyS: integerOption(options, 'latency-s', DEFAULTS.latencyS),
    timeoutS: integerOption(options, 'timeout-s', DEFAULTS.timeoutS),
  };
}

async function measure(
  settings: Settings,
  report: Report,
  parent: string,
  deadline: Deadline,
): Promise<void> {
  const events = makeEvents(settings.events);
  process.stdout.write(
    `${NAME}: ${settings.events} events of ~${JSON.stringify(events[0]).length} bytes; baseline first, then the node\n`,
  );
  report.baselineBatched = await baseline(join(parent, 'baseline-batched'), events, settings.batch, deadline);
  process.stdout.write(
    `  baseline INSERT, ${settings.batch} rows/stmt: ${formatRate(report.baselineBatched)} events/s\n`,
  );
  report.baselineSingle = await baseline(join(parent, 'baseline-single'), events, 1, deadline);
  process.stdout.write(`  baseline INSERT, 1 row/stmt: ${formatRate(report.baselineSingle)} events/s\n`);

  const nodeDir = join(parent, 'node');
  await mkdir(nodeDir);
  const child = await startNodeChild({
    dir: nodeDir,
    port: await freePort(),
    queues: [],
    extraToml: `[events]\nmax_batch = ${Math.max(settings.batch, 1)}`,
  });
  const agent = new http.Agent({
    keepAlive: true,
    maxSockets: Math.max(settings.inFlight, settings.singleInFlight) + 4,
  });
  try {
    await waitForReady(child, deadline);
    report.batched = await appendAll(child, agent, events, settings.batch, settings.inFlight, deadline);
    process.stdout.write(
      `  Baton POST /v1/events, ${settings.batch} per request: ${formatRate(report.batched)} events/s\n`,
    );
    report.single = await appendAll(child, agent, events, 1, settings.singleInFlight, deadline);
    process.stdout.write(`  Baton POST /v1/events, 1 per request: ${formatRate(report.single)} events/s\n`);
    report.latency = await latency(child, agent, settings, deadline);
  } finally {
    agent.destroy();
    const exit = await stopNodeChild(child);
    if (exit !== '0') process.stdout.write(`node exited with ${exit}:\n${child.output()}\n`);
  }
}

function makeEvents(count: number): BenchEvent[] {
  return Array.from({ length: count }, (_, index) => ({
    key: `sensor.${index % 16}`,
    value: String(index),
    namespace: 'bench',
    sender: 'bench',
  }));
}

/** Raw INSERTs of the same rows (offsets computed here) into a fresh PGlite with Baton's migrations. */
async function baseline(
  dir: string,
  events: readonly BenchEvent[],
  batch: number,
  deadline: Deadline,
): Promise<number> {
  const store = await openPgliteStore(dir);
  try {
    await applyMigrations(store, await builtinMigrations());
    const started = now();
    for (let start = 0; start < events.length; start += batch) {
      deadline.check();
      const rows = events.slice(start, start + batch);
      if (batch === 1) {
        const [event] = rows;
        if (!event) break;
        await store.query(
          'INSERT INTO baton_events ("offset", namespace, key, value, sender, create_time) VALUES ($1, $2, $3, $4, $5, now())',
          [start + 1, event.namespace, event.key, event.value, event.sender],
        );
        continue;
      }
      await store.query(
        `INSERT INTO baton_events ("offset", namespace, key, value, sender, create_time)
         SELECT o, n, k, v, s, now() FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]) AS r(o, n, k, v, s)`,
        [
          rows.map((_, index) => start + index + 1),
          rows.map((event) => event.namespace),
          rows.map((event) => event.key),
          rows.map((event) => event.value),
          rows.map((event) => event.sender),
        ],
      );
    }
    return events.length / ((now() - started) / 1000);
  } finally {
    await store.close();
  }
}

/**
 * Sends every event, `perRequest` per POST with `inFlight` requests at once, as the client does (with a
 * producer id and sequence numbers); resolves events per second from the first request to the last answer.
 */
async function appendAll(
  child: NodeChild,
  agent: http.Agent,
  events: readonly BenchEvent[],
  perRequest: number,
  inFlight: number,
  deadline: Deadline,
): Promise<number> {
  const clientId = randomUUID();
  const bodies: Buffer[] = [];
  for (let start = 0; start < events.length; start += perRequest) {
    const slice = events
      .slice(start, start + perRequest)
      .map((event, index) => ({ ...event, client_id: clientId, seq: start + index }));
    bodies.push(Buffer.from(JSON.stringify(perRequest === 1 ? slice[0] : slice)));
  }
  let next = 0;
  const started = now();
  const worker = async (): Promise<void> => {
    while (next < bodies.length) {
      const body = bodies[next++] as Buffer;
      await postEvents(child, body, agent, deadline.signal);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return events.length / ((now() - started) / 1000);
}

/**
 * Publishes one event per POST at `rate` per second for `latencyS` seconds while a NotificationClient listens
 * over SSE in this process; a sample is the time from just before the POST to the listener's batch.
 */
async function latency(
  child: NodeChild,
  agent: http.Agent,
  settings: Settings,
  deadline: Deadline,
): Promise<Latency> {
  const base = `http://127.0.0.1:${child.port}`;
  // Every request in flight listens to the deadline's signal.
  setMaxListeners(0, deadline.signal);
  const client = new NotificationClient(base, {
    namespace: 'latency',
    env: {},
    log: createLogger({ level: 'warn' }),
  });
  const sentAt = new Map<string, number>();
  const samples: number[] = [];
  const total = settings.rate * settings.latencyS;
  let received = 0;
  let origin = now();
  await client.registerListener(
    (batch) => {
      const at = now();
      for (const event of batch) {
        received++;
        const start = sentAt.get(event.value ?? '');
        if (start !== undefined && start - origin >= WARMUP_MS) samples.push(at - start);
      }
    },
    ['tick'],
  );
  const pending = new Set<Promise<void>>();
  origin = now();
  let sent = 0;
  while (sent < total) {
    deadline.check();
    const due = Math.min(total, Math.floor(((now() - origin) * settings.rate) / 1000));
    while (sent < due) {
      const seq = String(sent++);
      sentAt.set(seq, now());
      const body = Buffer.from(JSON.stringify({ key: 'tick', value: seq, namespace: 'latency' }));
      const posting = postEvents(child, body, agent, deadline.signal);
      pending.add(posting);
      void posting.finally(() => pending.delete(posting)).catch(() => undefined);
    }
    await pause(1, deadline.signal);
  }
  await Promise.all(pending);
  while (received < total) {
    await pause(10, deadline.signal);
  }
  await client.close();
  samples.sort((a, b) => a - b);
  const percentile = (p: number): number =>
    samples[Math.min(samples.length - 1, Math.floor((p / 100) * samples.length))] ?? NaN;
  return {
    p50: percentile(50),
    p99: percentile(99),
    max: samples.at(-1) ?? NaN,
    samples: samples.length,
    sent: total,
  };
}

function printReport(settings: Settings, report: Report): void {
  const ratio = (value: number | undefined, base: number | undefined): string =>
    value === undefined || base === undefined ? '-' : `${((100 * value) / base).toFixed(1)}% of the baseline`;
  process.stdout.write(`\n${NAME} results (${settings.events} events)\n`);
  if (report.baselineBatched !== undefined) {
    process.stdout.write(
      `  baseline: raw INSERT into PGlite, ${settings.batch} rows/stmt   ${formatRate(report.baselineBatched)} events/s\n`,
    );
  }
  if (report.baselineSingle !== undefined) {
    process.stdout.write(
      `  baseline: raw INSERT into PGlite, 1 row/stmt        ${formatRate(report.baselineSingle)} events/s\n`,
    );
  }
  if (report.batched !== undefined) {
    process.stdout.write(
      `  append batched (${settings.batch}/request, ${settings.inFlight} in flight)      ${formatRate(report.batched)} events/s (${ratio(report.batched, report.baselineBatched)}; goal >= 20,000)\n`,
    );
  }
  if (report.single !== undefined) {
    process.stdout.write(
      `  append one per request (${settings.singleInFlight} in flight)         ${formatRate(report.single)} events/s (${ratio(report.single, report.baselineSingle).replace('baseline', '1-row baseline')})\n`,
    );
  }
  if (report.latency) {
    const { p50, p99, max, samples, sent } = report.latency;
    process.stdout.write(
      `  publish -> SSE listener at ${settings.rate}/s for ${settings.latencyS} s: p50 ${round2(p50)} ms, p99 ${round2(p99)} ms, max ${round2(max)} ms (${samples} samples of ${sent}; goal p99 <= 10 ms)\n`,
    );
  }
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}

/** One POST /v1/events; anything but 201 fails the benchmark. */
async function postEvents(
  child: NodeChild,
  body: Buffer,
  agent: http.Agent,
  signal: AbortSignal,
): Promise<void> {
  const response = await request({
    port: child.port,
    method: 'POST',
    path: '/v1/events',
    body,
    contentType: 'application/json',
    agent,
    signal,
  });
  if (response.status !== 201)
    throw new Error(`POST /v1/events answered ${response.status}: ${response.body}`);
}
