// The events this process appended most recently, kept in memory so that followers get them without a
// query: a run of consecutive offsets, valid only while it has no gap. Appends of other nodes (a server
// store) are not in it; a follower whose range it does not cover whole reads the store instead.
import type { EventQuery, StoredEvent } from './types.js';

/** Events kept, at most; older ones are dropped from the front. */
const CAPACITY = 8_192;

export class RecentEvents {
  #events: StoredEvent[] = [];

  /** Adds events that just committed. A run that does not continue the kept one replaces it. */
  add(events: readonly StoredEvent[]): void {
    if (events.length === 0) return;
    const sorted = [...events].sort((a, b) => a.offset - b.offset);
    const first = sorted[0] as StoredEvent;
    const contiguous = sorted.every((event, index) => event.offset === first.offset + index);
    if (!contiguous) {
      this.#events = [];
      return;
    }
    const end = this.#events.at(-1);
    this.#events =
      end !== undefined && end.offset + 1 === first.offset ? this.#events.concat(sorted) : sorted;
    if (this.#events.length > CAPACITY) this.#events = this.#events.slice(-CAPACITY);
  }

  /**
   * The events matching `query` with offsets in (after, upTo], in order and at most `query.limit` of them;
   * undefined when the kept run does not hold every offset of that range.
   */
  between(after: number, upTo: number, query: Omit<EventQuery, 'after' | 'to'>): StoredEvent[] | undefined {
    const first = this.#events[0];
    const last = this.#events.at(-1);
    if (first === undefined || last === undefined) return undefined;
    if (after + 1 < first.offset || upTo > last.offset) return undefined;
    const keys = query.keys !== undefined && query.keys.length > 0 ? new Set(query.keys) : undefined;
    const limit = query.limit ?? Number.POSITIVE_INFINITY;
    const matching: StoredEvent[] = [];
    for (let index = Math.max(0, after + 1 - first.offset); index < this.#events.length; index++) {
      const event = this.#events[index] as StoredEvent;
      if (event.offset > upTo || matching.length >= limit) break;
      if (query.namespace !== undefined && event.namespace !== query.namespace) continue;
      if (keys !== undefined && !keys.has(event.key)) continue;
      if (query.sender !== undefined && event.sender !== query.sender) continue;
      matching.push(event);
    }
    return matching;
  }

  clear(): void {
    this.#events = [];
  }
}
