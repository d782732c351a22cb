// Role-change delivery: the immediate first call of node-role-changed, leader-watch semantics (overwrite
// by key, removal, event-type filter, no initial event), isolation of throwing and slow callbacks.
import { describe, expect, it, vi } from 'vitest';

import { RoleEvents } from '../../src/cluster/role-events.js';
import type { LeaderWatchEvent, RoleChange } from '../../src/cluster/types.js';
import { createLogger } from '../../src/log.js';

const log = createLogger({ level: 'silent' });
const cause = (name: string) => ({ cause: name, message: `because ${name}` });

function events() {
  return new RoleEvents({ role: 'secondary', term: 1, leader: 'a' }, log);
}

describe('node-role-changed', () => {
  it('calls a new subscriber at once with previous = null, then on each role change', async () => {
    const roles = events();
    const seen: RoleChange[] = [];
    roles.subscribe((change) => seen.push(change));
    await vi.waitFor(() => expect(seen).toHaveLength(1));
    expect(seen[0]).toEqual({ previous: null, new: 'secondary', term: 1, leader: 'a' });
    roles.update({ role: 'primary', term: 2, leader: 'me' }, cause('elected'));
    roles.update({ role: 'primary', term: 2, leader: 'me' }, cause('renewed')); // no change: nothing delivered
    roles.update({ role: 'secondary', term: 3, leader: 'b' }, cause('lost-lease'));
    await vi.waitFor(() => expect(seen).toHaveLength(3));
    expect(seen.map((c) => [c.previous, c.new, c.term])).toEqual([
      [null, 'secondary', 1],
      ['secondary', 'primary', 2],
      ['primary', 'secondary', 3],
    ]);
  });

  it('stops calling after unsubscribe', async () => {
    const roles = events();
    const seen: RoleChange[] = [];
    const off = roles.subscribe((change) => seen.push(change));
    await vi.waitFor(() => expect(seen).toHaveLength(1));
    off();
    roles.update({ role: 'primary', term: 2, leader: 'me' }, cause('elected'));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(seen).toHaveLength(1);
  });

  it('isolates a throwing subscriber: it and the others keep receiving changes', async () => {
    const roles = events();
    const good: string[] = [];
    const bad = vi.fn(() => {
      throw new Error('subscriber bug');
    });
    roles.subscribe(bad);
    roles.subscribe((change) => good.push(change.new));
    roles.update({ role: 'primary', term: 2, leader: 'me' }, cause('elected'));
    await vi.waitFor(() => expect(good).toEqual(['secondary', 'primary']));
    await vi.waitFor(() => expect(bad).toHaveBeenCalledTimes(2));
  });

  it('a slow subscriber delays only itself; update() never waits for callbacks', async () => {
    const roles = events();
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slow: string[] = [];
    const fast: string[] = [];
    roles.subscribe(async (change) => {
      await gate;
      slow.push(change.new);
    });
    roles.subscribe((change) => fast.push(change.new));
    const before = Date.now();
    roles.update({ role: 'primary', term: 2, leader: 'me' }, cause('elected'));
    roles.update({ role: 'secondary', term: 3, leader: 'b' }, cause('lost-lease'));
    expect(Date.now() - before).toBeLessThan(50);
    await vi.waitFor(() => expect(fast).toEqual(['secondary', 'primary', 'secondary']));
    expect(slow).toEqual([]);
    release();
    await vi.waitFor(() => expect(slow).toEqual(['secondary', 'primary', 'secondary']));
  });

  it('gives the role changes as an async iterable, current role first', async () => {
    const roles = events();
    const iterator = roles.roleChanges();
    roles.update({ role: 'primary', term: 2, leader: 'me' }, cause('elected'));
    const first = await iterator.next();
    const second = await iterator.next();
    expect(first.value).toEqual({ previous: null, new: 'secondary', term: 1, leader: 'a' });
    expect(second.value).toMatchObject({ previous: 'secondary', new: 'primary', term: 2 });
    await iterator.return?.();
    expect((await iterator.next()).done).toBe(true);
  });
});

describe('leader watches', () => {
  it('fire on changes only, with the Raft fields; become-follower also when a new primary is learned', async () => {
    const roles = events();
    const seen: LeaderWatchEvent[] = [];
    roles.addLeaderWatch('w', (event) => seen.push(event));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(seen).toEqual([]); // no initial event
    roles.update({ role: 'secondary', term: 2, leader: 'b' }, cause('new-leader'));
    roles.update({ role: 'primary', term: 3, leader: 'me' }, cause('elected'));
    roles.update({ role: 'secondary', term: 3, leader: undefined }, cause('renew-failed'));
    await vi.waitFor(() => expect(seen).toHaveLength(3));
    expect(seen[0]).toEqual({
      key: 'w',
      event: 'become-follower',
      cause: 'new-leader',
      message: 'because new-leader',
      oldLeader: 'a',
      newLeader: 'b',
      previous: 'secondary',
      new: 'secondary',
      term: 2,
    });
    expect(seen[1]).toMatchObject({
      event: 'become-leader',
      cause: 'elected',
      previous: 'secondary',
      new: 'primary',
      term: 3,
    });
    expect(seen[2]).toMatchObject({
      event: 'become-follower',
      cause: 'renew-failed',
      previous: 'primary',
      new: 'secondary',
    });
  });

  it('the same key overwrites the earlier watch; removal stops it', async () => {
    const roles = events();
    const first = vi.fn();
    const second = vi.fn();
    roles.addLeaderWatch('k', first);
    roles.addLeaderWatch('k', second);
    roles.update({ role: 'primary', term: 2, leader: 'me' }, cause('elected'));
    await vi.waitFor(() => expect(second).toHaveBeenCalledTimes(1));
    expect(first).not.toHaveBeenCalled();
    expect(roles.removeLeaderWatch('k')).toBe(true);
    expect(roles.removeLeaderWatch('k')).toBe(false);
    roles.update({ role: 'secondary', term: 3, leader: 'b' }, cause('lost-lease'));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(second).toHaveBeenCalledTimes(1);
  });

  it('filters by event type', async () => {
    const roles = events();
    const leaderOnly = vi.fn();
    const followerOnly = vi.fn();
    roles.addLeaderWatch('l', leaderOnly, 'become-leader');
    roles.addLeaderWatch('f', followerOnly, 'become-follower');
    roles.update({ role: 'primary', term: 2, leader: 'me' }, cause('elected'));
    roles.update({ role: 'secondary', term: 3, leader: 'b' }, cause('lost-lease'));
    await vi.waitFor(() => expect(followerOnly).toHaveBeenCalledTimes(1));
    expect(leaderOnly).toHaveBeenCalledTimes(1);
    expect(leaderOnly.mock.calls[0]?.[0]).toMatchObject({ event: 'become-leader' });
    expect(followerOnly.mock.calls[0]?.[0]).toMatchObject({ event: 'become-follower' });
  });

  it('a throwing watch is logged and does not stop later deliveries', async () => {
    const roles = events();
    const calls: string[] = [];
    roles.addLeaderWatch('t', (event) => {
      calls.push(event.event);
      throw new Error('watch bug');
    });
    roles.update({ role: 'primary', term: 2, leader: 'me' }, cause('elected'));
    roles.update({ role: 'secondary', term: 3, leader: 'b' }, cause('lost-lease'));
    await vi.waitFor(() => expect(calls).toEqual(['become-leader', 'become-follower']));
  });

  it('refuses a watch that is not a function or an unknown event type', () => {
    const roles = events();
    expect(() => roles.addLeaderWatch('x', 'nope' as never)).toThrow(/not a function/);
    expect(() => roles.addLeaderWatch('x', () => undefined, 'become-king' as never)).toThrow(
      /unknown event type/,
    );
  });
});
