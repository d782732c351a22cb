// The watchdog: a worker thread that ends the process when a handler blocks the event loop past its
// deadline. `timeout_ms` is a timer, and no timer fires while a synchronous loop holds the thread; the worker
// runs on its own thread, sees the main thread's heartbeat stop, writes one log line naming the queue and
// the claimed records, and kills the process. The claim was committed, so the next start counts an attempt.
import { Worker } from 'node:worker_threads';

/** A handler call as the watchdog and the crash log name it. */
export interface HandlerCall {
  readonly queue: string;
  readonly timeoutMs: number;
  /** The claimed batch (or inline request) the records belong to. */
  readonly claim?: string;
  /** Ids of the records (the first RECORD_IDS_LOGGED of them). */
  readonly records: readonly string[];
  /** How many records the call runs. */
  readonly count: number;
}

/** What the record processor tells of each handler call. */
export interface HandlerWatch {
  /** A call starts; returns the token to end it with. */
  begin(call: HandlerCall): number;
  end(token: number): void;
}

/** Record ids logged per call at most. */
export const RECORD_IDS_LOGGED = 20;
/** How often the main thread beats. */
const HEARTBEAT_MS = 100;
/** How often the worker looks. */
const CHECK_MS = 100;
/** A call is ended this long after its deadline, when the event loop has been blocked this long too. */
export const WATCHDOG_MARGIN_MS = 1_000;

// Runs on the worker thread, as a CommonJS script: a file of its own would not exist when the sources run
// without a build (tests, tsx).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { writeSync } = require('node:fs');
const { beat, origin, marginMs, checkMs, node } = workerData;
const beats = new Int32Array(beat);
const calls = new Map();
parentPort.on('message', (message) => {
  if (message.begin !== undefined) calls.set(message.begin, message);
  else calls.delete(message.end);
});
setInterval(() => {
  const now = Date.now();
  const blockedMs = now - (origin + Atomics.load(beats, 0));
  if (blockedMs < marginMs) return;
  for (const { call, startedAt } of calls.values()) {
    const runningMs = now - startedAt;
    if (runningMs < call.timeoutMs + marginMs) continue;
    const line = {
      level: 60, time: now, ...(node ? { node } : {}), queue: call.queue, claim: call.claim,
      records: call.records, count: call.count, timeoutMs: call.timeoutMs, blockedMs, runningMs,
      msg: 'watchdog: the handler of queue "' + call.queue + '" has blocked the event loop for ' + blockedMs +
        ' ms, past its timeout_ms (' + call.timeoutMs + ' ms); killing the process (the claim is recovered at the next start, with an attempt counted)',
    };
    writeSync(2, JSON.stringify(line) + '\\n');
    process.kill(process.pid, 'SIGKILL');
    return;
  }
}, checkMs);
`;

export class Watchdog implements HandlerWatch {
  readonly #worker: Worker;
  readonly #beats: Int32Array;
  readonly #origin = Date.now();
  readonly #heartbeat: NodeJS.Timeout;
  readonly #calls = new Map<number, HandlerCall>();
  #next = 0;

  /** Starts the worker; `node` names the node in its log line. */
  constructor(options: { node?: string; marginMs?: number } = {}) {
    const beat = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
    this.#beats = new Int32Array(beat);
    this.#worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        beat,
        origin: this.#origin,
        marginMs: options.marginMs ?? WATCHDOG_MARGIN_MS,
        checkMs: CHECK_MS,
        node: options.node,
      },
      // Its own small heap: it only reads messages and a clock.
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 },
    });
    this.#worker.unref();
    this.#beat();
    this.#heartbeat = setInterval(() => this.#beat(), HEARTBEAT_MS).unref();
  }

  begin(call: HandlerCall): number {
    const token = ++this.#next;
    this.#calls.set(token, call);
    this.#beat();
    this.#worker.postMessage({ begin: token, call, startedAt: Date.now() });
    return token;
  }

  end(token: number): void {
    if (this.#calls.delete(token)) this.#worker.postMessage({ end: token });
  }

  /** The handler calls running now (for the crash log). */
  running(): HandlerCall[] {
    return [...this.#calls.values()];
  }

  async stop(): Promise<void> {
    clearInterval(this.#heartbeat);
    await this.#worker.terminate();
  }

  #beat(): void {
    Atomics.store(this.#beats, 0, Date.now() - this.#origin);
  }
}
