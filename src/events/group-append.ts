// Group commit for appends that arrive together (many producers sending one event each): while one append
// transaction runs, the appends that come in wait, and the next transaction takes all of them at once. Each
// caller still gets its own events back, in its order, with offsets that are consecutive for its request.
// The cost of a transaction (the head lock, the commit) is then shared instead of paid per request.
//
// An embedded store runs its queries on this thread, often without ever yielding to I/O, so requests that
// arrive meanwhile are only read once it is done: each round waits for one turn of the event loop
// (setImmediate) before it takes the queue, so that those requests join it.
import type { EventLog } from './log.js';
import type { AppendedEvent, EventInput } from './types.js';
import { normalizeEvent } from './types.js';

interface Pending {
  readonly events: readonly EventInput[];
  readonly resolve: (appended: AppendedEvent[]) => void;
  readonly reject: (error: unknown) => void;
}

export class GroupAppender {
  readonly #log: EventLog;
  readonly #maxEvents: number;
  #queue: Pending[] = [];
  #running = false;

  /** `maxEvents`: at most this many events per transaction (a single larger request still goes alone). */
  constructor(log: EventLog, maxEvents: number) {
    this.#log = log;
    this.#maxEvents = maxEvents;
  }

  /** Appends `events` as one unit (all of them or none), possibly in a transaction shared with others. */
  append(events: readonly EventInput[]): Promise<AppendedEvent[]> {
    // Refuse bad input here, so that one caller's mistake never fails the others' shared transaction.
    events.forEach((event, index) =>
      normalizeEvent(event, events.length === 1 ? 'event' : `events[${index}]`),
    );
    return new Promise((resolve, reject) => {
      this.#queue.push({ events, resolve, reject });
      if (!this.#running) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0) {
        await new Promise((resolve) => setImmediate(resolve));
        const group = this.#take();
        await this.#appendGroup(group);
      }
    } finally {
      this.#running = false;
    }
  }

  #take(): Pending[] {
    const group: Pending[] = [];
    let size = 0;
    while (this.#queue.length > 0) {
      const next = this.#queue[0] as Pending;
      if (group.length > 0 && size + next.events.length > this.#maxEvents) break;
      group.push(next);
      size += next.events.length;
      this.#queue.shift();
    }
    return group;
  }

  async #appendGroup(group: readonly Pending[]): Promise<void> {
    if (group.length === 1) {
      const [only] = group as [Pending];
      await this.#log.append(only.events).then(only.resolve, only.reject);
      return;
    }
    try {
      const appended = await this.#log.append(group.flatMap((pending) => pending.events));
      let start = 0;
      for (const pending of group) {
        pending.resolve(appended.slice(start, start + pending.events.length));
        start += pending.events.length;
      }
    } catch {
      // Something in the shared transaction failed: append each request alone so each gets its own answer.
      for (const pending of group)
        await this.#log.append(pending.events).then(pending.resolve, pending.reject);
    }
  }
}
