// The in-memory run of recent events that followers read instead of the store: it answers only for a
// range it holds whole, filters like the store's query, and forgets itself on a gap.
import { describe, expect, it } from 'vitest';

import { RecentEvents } from '../../src/events/recent.js';
import type { StoredEvent } from '../../src/events/types.js';

const event = (offset: number, key = 'k', namespace = 'default'): StoredEvent => ({
  offset,
  namespace,
  key,
  value: null,
  context: null,
  sender: null,
  createTime: 0,
});

describe('RecentEvents', () => {
  it('answers for a range it holds whole, filtered and limited', () => {
    const recent = new RecentEvents();
    recent.add([event(3, 'a'), event(1, 'a'), event(2, 'b', 'other')]);
    recent.add([event(4, 'b')]);
    expect(recent.between(0, 4, {})?.map((e) => e.offset)).toEqual([1, 2, 3, 4]);
    expect(recent.between(1, 4, { keys: ['b'] })?.map((e) => e.offset)).toEqual([2, 4]);
    expect(recent.between(0, 4, { namespace: 'default', limit: 2 })?.map((e) => e.offset)).toEqual([1, 3]);
    expect(recent.between(4, 4, {})).toEqual([]);
  });

  it('does not answer for offsets it does not hold', () => {
    const recent = new RecentEvents();
    expect(recent.between(0, 1, {})).toBeUndefined();
    recent.add([event(10), event(11)]);
    expect(recent.between(8, 11, {})).toBeUndefined(); // 9 was appended elsewhere
    expect(recent.between(9, 12, {})).toBeUndefined(); // 12 is not known here
    expect(recent.between(9, 11, {})?.length).toBe(2);
  });

  it('starts over after a gap', () => {
    const recent = new RecentEvents();
    recent.add([event(1), event(2)]);
    recent.add([event(5)]);
    expect(recent.between(0, 2, {})).toBeUndefined();
    expect(recent.between(4, 5, {})?.map((e) => e.offset)).toEqual([5]);
    recent.add([event(7), event(9)]);
    expect(recent.between(4, 5, {})).toBeUndefined();
  });
});
