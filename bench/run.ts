// `npm run bench -- <name> [options]`: runs one benchmark program by name. Each benchmark prints its
// figures and its baseline measured in the same run, then one closing line of JSON.
// An unknown or missing name prints the list and exits 2.
import { UsageError } from './support.js';

interface Benchmark {
  readonly description: string;
  readonly load: () => Promise<{ main(args: readonly string[]): Promise<number> }>;
}

const BENCHMARKS: Readonly<Record<string, Benchmark>> = {
  'ingest-embedded': {
    description:
      'HTTP NDJSON ingest into a node on the embedded store, end to end, against raw PGlite inserts',
    load: () => import('./ingest-embedded.js'),
  },
  'ingest-redis': {
    description:
      'Redis list to PostgreSQL with the quickstart handler: Baton against a hand-written limit, BullMQ and graphile-worker',
    load: () => import('./ingest-redis.js'),
  },
  failover: {
    description:
      'kill -9 of the primary of 3 nodes, 30 times: time to a new primary, and overlaps (postgres and redis electors); --mode partition cuts its network namespace instead',
    load: () => import('./failover.js'),
  },
  cli: {
    description:
      'first contact: baton --help, --version, sql on an existing and on a new embedded store (time, peak RSS), against node -e 0 and a bare PGlite',
    load: () => import('./cli.js'),
  },
  events: {
    description:
      'event log on the embedded store: 100k appends (batched, one by one) against raw INSERTs, and publish → SSE listener latency at 1k/s',
    load: () => import('./events.js'),
  },
  schedules: {
    description:
      'tick lateness of a 1-second schedule on PostgreSQL against a bare timer; kill -9 and SIGSTOP of the primary of 2 nodes (postgres elector), kill -9 on the redis elector: catch-up of missed ticks against failover + one tick; 100k delayed records over 60 s (--delayed-backend redis)',
    load: () => import('./schedules.js'),
  },
  keyed: {
    description:
      'ordered queues against unordered ones, end to end on a node: 10k keys and 10 hot keys against no keys, on the store queue (PostgreSQL) and on Redis (--layout interleaved|grouped)',
    load: () => import('./keyed.js'),
  },
  scale: {
    description:
      'store queue at scale on PostgreSQL (no statistics) and embedded: drain of 10k and 1M, idle CPU with 1M in back-off, p99 of read routes (--rows 5m)',
    load: () => import('./scale.js'),
  },
};

function printList(): void {
  process.stderr.write('usage: npm run bench -- <name> [options]\nbenchmarks:\n');
  for (const [name, benchmark] of Object.entries(BENCHMARKS)) {
    process.stderr.write(`  ${name.padEnd(18)} ${benchmark.description}\n`);
  }
}

async function run(argv: readonly string[]): Promise<number> {
  const [name, ...args] = argv;
  const benchmark = name === undefined ? undefined : BENCHMARKS[name];
  if (!benchmark) {
    if (name !== undefined) process.stderr.write(`unknown benchmark "${name}"\n`);
    printList();
    return 2;
  }
  try {
    return await (await benchmark.load()).main(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${name}: ${error.message}\n`);
    return 2;
  }
}

process.exitCode = await run(process.argv.slice(2));
