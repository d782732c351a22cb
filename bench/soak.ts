// `npm run soak [-- --minutes 10 --rate 2000 --events-rate 200 --sample-seconds 10]`: a node (a child
// process on the embedded store, the quickstart handler) under steady ingest over HTTP, steady event
// appends, and one SSE listener, for a bounded time. Every sample prints the node's memory (RSS, heap in
// use) and event-loop delay from its /metrics. It fails (exit 1) when memory keeps growing after the
// warm-up, when a record or an event goes missing, or when a request fails.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { NodeChild } from './support.js';
import {
  Deadline,
  formatMachine,
  describeMachine,
  freePort,
  integerOption,
  LOOPBACK,
  nodeCount,
  parseOptions,
  pause,
  request,
  ROOT,
  startNodeChild,
  stopNodeChild,
  UsageError,
  waitForReady,
} from './support.js';

interface Sample {
  readonly seconds: number;
  readonly rssBytes: number;
  readonly heapBytes: number;
  readonly loopP99Ms: number;
  readonly stored: number;
  readonly eventsSeen: number;
}

const TICK_MS = 100;

export async function main(args: readonly string[]): Promise<number> {
  const options = parseOptions(args, ['minutes', 'rate', 'events-rate', 'sample-seconds']);
  const minutes = integerOption(options, 'minutes', 10);
  const rate = integerOption(options, 'rate', 2_000);
  const eventsRate = integerOption(options, 'events-rate', 200);
  const sampleSeconds = integerOption(options, 'sample-seconds', 10);
  if (minutes > 60) throw new UsageError('--minutes is at most 60');

  const dir = await mkdtemp(join(tmpdir(), 'baton-soak-'));
  const port = await freePort();
  const deadline = new Deadline((minutes * 60 + 120) * 1000);
  let child: NodeChild | undefined;
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once('SIGINT', onSignal);
  try {
    process.stdout.write(`soak: ${formatMachine(describeMachine())}\n`);
    process.stdout.write(
      `soak: ${minutes} min, ${rate} records/s over HTTP, ${eventsRate} events/s, one SSE listener\n`,
    );
    child = await startNodeChild({
      dir,
      port,
      queues: [
        {
          name: 'ping',
          handler: join(ROOT, 'examples/quickstart/handlers/ping.ts'),
          extra: 'batch_size = 1000',
        },
      ],
    });
    await waitForReady(child, deadline);

    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const failures: string[] = [];
    let sentRecords = 0;
    let sentEvents = 0;
    const listener = listen(port, stop.signal);
    const endAt = Date.now() + minutes * 60_000;
    const samples: Sample[] = [];
    const started = Date.now();
    let nextSample = started + sampleSeconds * 1000;
    let tick = 0;
    let sequence = 0;

    process.stdout.write('   time    rss MB   heap MB   loop p99 ms    stored   events seen\n');
    while (Date.now() < endAt && !stop.signal.aborted) {
      const due = started + tick * TICK_MS;
      tick++;
      await pause(Math.max(0, due - Date.now()), stop.signal);
      const records = perTick(rate, tick);
      const events = perTick(eventsRate, tick);
      const lines = Array.from({ length: records }, () =>
        JSON.stringify({ name: `soak-${sequence++}`, timestamp: new Date().toISOString() }),
      );
      const sends: Array<Promise<void>> = [];
      if (records > 0) {
        sends.push(
          request({
            port,
            method: 'POST',
            path: '/v1/queues/ping/records',
            body: Buffer.from(lines.join('\n')),
            contentType: 'application/x-ndjson',
            agent,
            signal: deadline.signal,
          }).then((response) => {
            if (response.status === 202) sentRecords += records;
            else failures.push(`ingest answered ${response.status}: ${response.body.slice(0, 200)}`);
          }),
        );
      }
      if (events > 0) {
        const batch = Array.from({ length: events }, (_, index) => ({
          key: 'soak.tick',
          namespace: 'soak',
          value: `${tick}:${index}`,
        }));
        sends.push(
          request({
            port,
            method: 'POST',
            path: '/v1/events',
            body: Buffer.from(JSON.stringify(batch)),
            contentType: 'application/json',
            agent,
            signal: deadline.signal,
          }).then((response) => {
            if (response.status === 201) sentEvents += events;
            else failures.push(`events answered ${response.status}: ${response.body.slice(0, 200)}`);
          }),
        );
      }
      await Promise.all(sends).catch((error: unknown) => failures.push(String(error)));
      if (Date.now() >= nextSample) {
        nextSample += sampleSeconds * 1000;
        const sample = await takeSample(
          port,
          (Date.now() - started) / 1000,
          listener.seen(),
          deadline.signal,
        );
        samples.push(sample);
        process.stdout.write(formatSample(sample));
      }
      if (failures.length > 20) break;
    }

    // Let the node drain, then check that nothing went missing.
    let stored = 0;
    for (let attempt = 0; attempt < 120; attempt++) {
      stored = await nodeCount(port, 'select count(*) as count from ping', deadline.signal);
      if (stored >= sentRecords && listener.seen() >= sentEvents) break;
      await pause(500, deadline.signal);
    }
    listener.close();
    agent.destroy();
    const verdict = judge(samples);
    process.stdout.write(`records: sent ${sentRecords}, stored ${stored}\n`);
    process.stdout.write(`events: sent ${sentEvents}, seen by the listener ${listener.seen()}\n`);
    process.stdout.write(`memory: ${verdict.summary}\n`);
    for (const failure of failures.slice(0, 5)) process.stdout.write(`failed request: ${failure}\n`);
    const ok =
      verdict.ok && failures.length === 0 && stored === sentRecords && listener.seen() === sentEvents;
    const last = samples.at(-1);
    process.stdout.write(
      `${JSON.stringify({
        bench: 'soak',
        minutes,
        records: sentRecords,
        stored,
        events: sentEvents,
        events_seen: listener.seen(),
        failed_requests: failures.length,
        rss_mb_first: samples[0] ? mb(samples[0].rssBytes) : null,
        rss_mb_last: last ? mb(last.rssBytes) : null,
        heap_growth_mb_per_min: verdict.heapSlopeMbPerMinute,
        loop_p99_ms_max: Math.max(0, ...samples.map((sample) => sample.loopP99Ms)),
        ok,
      })}\n`,
    );
    return ok ? 0 : 1;
  } finally {
    process.removeListener('SIGINT', onSignal);
    stop.abort();
    deadline.dispose();
    if (child) await stopNodeChild(child);
    await rm(dir, { recursive: true, force: true });
  }
}

/** Spreads `perSecond` over ticks of TICK_MS so that the total per second is exact. */
function perTick(perSecond: number, tick: number): number {
  const ticks = 1000 / TICK_MS;
  return Math.floor((perSecond * tick) / ticks) - Math.floor((perSecond * (tick - 1)) / ticks);
}

/** One SSE listener of the namespace "soak", from the start of the log; counts what it receives. */
function listen(port: number, signal: AbortSignal): { seen(): number; close(): void } {
  let seen = 0;
  let buffer = '';
  const request = http.get(
    { host: LOOPBACK, port, path: '/v1/events/stream?namespace=soak&from=0', signal },
    (response) => {
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        buffer += chunk;
        let end = buffer.indexOf('\n\n');
        while (end !== -1) {
          if (/^data: /m.test(buffer.slice(0, end))) seen++;
          buffer = buffer.slice(end + 2);
          end = buffer.indexOf('\n\n');
        }
      });
    },
  );
  request.on('error', () => undefined);
  return { seen: () => seen, close: () => request.destroy() };
}

async function takeSample(
  port: number,
  seconds: number,
  eventsSeen: number,
  signal: AbortSignal,
): Promise<Sample> {
  const metrics = (await request({ port, method: 'GET', path: '/metrics', signal })).body;
  const value = (name: string): number => {
    const line = metrics
      .split('\n')
      .find((candidate) => candidate.startsWith(`${name}{`) || candidate.startsWith(`${name} `));
    return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
  };
  return {
    seconds,
    rssBytes: value('baton_process_resident_memory_bytes'),
    heapBytes: value('baton_nodejs_heap_size_used_bytes'),
    loopP99Ms: value('baton_nodejs_eventloop_lag_p99_seconds') * 1000,
    stored: value('baton_records_processed_total'),
    eventsSeen,
  };
}

function formatSample(sample: Sample): string {
  return (
    `${`${Math.round(sample.seconds)} s`.padStart(7)} ${mb(sample.rssBytes).toFixed(1).padStart(9)} ` +
    `${mb(sample.heapBytes).toFixed(1).padStart(9)} ${sample.loopP99Ms.toFixed(1).padStart(13)} ` +
    `${String(sample.stored).padStart(9)} ${String(sample.eventsSeen).padStart(13)}\n`
  );
}

function mb(bytes: number): number {
  return Math.round((bytes / 1_048_576) * 10) / 10;
}

/**
 * Memory "keeps growing" when, after the first third of the run (warm-up), the lowest heap of the last
 * third is above the highest heap of the middle third, and the fitted slope would add more than 25 % of
 * the heap over the run. Heap in use swings with garbage collection; the lowest points show what is kept.
 */
function judge(samples: readonly Sample[]): {
  ok: boolean;
  summary: string;
  heapSlopeMbPerMinute: number | null;
} {
  if (samples.length < 6) {
    return {
      ok: true,
      summary: `too few samples (${samples.length}) to judge growth`,
      heapSlopeMbPerMinute: null,
    };
  }
  const third = Math.floor(samples.length / 3);
  const middle = samples.slice(third, 2 * third);
  const last = samples.slice(2 * third);
  const steady = samples.slice(third);
  const slope = fitSlope(steady.map((sample) => [sample.seconds / 60, mb(sample.heapBytes)]));
  const minutes = (steady.at(-1)?.seconds ?? 0) / 60 - (steady[0]?.seconds ?? 0) / 60;
  const meanHeap = steady.reduce((sum, sample) => sum + mb(sample.heapBytes), 0) / steady.length;
  const lowestLast = Math.min(...last.map((sample) => mb(sample.heapBytes)));
  const highestMiddle = Math.max(...middle.map((sample) => mb(sample.heapBytes)));
  const growing = lowestLast > highestMiddle && slope * minutes > 0.25 * meanHeap;
  const summary =
    `heap in use after warm-up: mean ${meanHeap.toFixed(1)} MB, slope ${slope.toFixed(2)} MB/min; lowest of the ` +
    `last third ${lowestLast.toFixed(1)} MB vs highest of the middle third ${highestMiddle.toFixed(1)} MB: ` +
    (growing ? 'KEEPS GROWING' : 'stable');
  return { ok: !growing, summary, heapSlopeMbPerMinute: Math.round(slope * 100) / 100 };
}

function fitSlope(points: ReadonlyArray<readonly [number, number]>): number {
  const n = points.length;
  const meanX = points.reduce((sum, [x]) => sum + x, 0) / n;
  const meanY = points.reduce((sum, [, y]) => sum + y, 0) / n;
  let covariance = 0;
  let variance = 0;
  for (const [x, y] of points) {
    covariance += (x - meanX) * (y - meanY);
    variance += (x - meanX) ** 2;
  }
  return variance === 0 ? 0 : covariance / variance;
}

process.exitCode = await main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof UsageError) {
    process.stderr.write(`soak: ${error.message}\n`);
    return 2;
  }
  throw error;
});
