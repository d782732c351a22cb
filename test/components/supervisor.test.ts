// The supervisor: role gating, stop ordering and deadlines, the drain of a stopping node, restarts with
// back-off, and role flapping.
import { afterEach, describe, expect, it, vi } from 'vitest';

import { defineComponent } from '../../src/components/component.js';
import type { ComponentContext } from '../../src/components/component.js';
import type { SupervisorOptions } from '../../src/components/supervisor.js';
import { Supervisor } from '../../src/components/supervisor.js';
import {
  FencedError,
  InvalidComponentError,
  NodeStoppingError,
  NotPrimaryError,
  SteppedDownError,
} from '../../src/errors.js';
import type { Tx } from '../../src/store/store.js';
import { captureLog, probe, unusedStore } from './support.js';

const WAIT = { timeout: 5000, interval: 5 };
const supervisors: Supervisor[] = [];

afterEach(async () => {
  await Promise.all(supervisors.splice(0).map((supervisor) => supervisor.stop()));
});

function supervisor(options: Partial<SupervisorOptions> = {}) {
  const logged = captureLog();
  const created = new Supervisor({
    log: logged.log,
    store: unusedStore,
    assertPrimary: () => Promise.resolve(),
    stopTimeoutMs: 2000,
    ...options,
  });
  supervisors.push(created);
  const state = (name: string) => created.status().find((status) => status.name === name)?.state;
  return { supervisor: created, state, ...logged };
}

describe('Supervisor', () => {
  it("runs 'primary' components only on a primary or a node not in a group, 'any' always", async () => {
    const { supervisor: sup, state } = supervisor();
    const journal: string[] = [];
    const primary = probe({ name: 'primary-work', runOn: 'primary', journal });
    const any = probe({ name: 'any-work', runOn: 'any', journal });
    sup.add(primary.component);
    sup.add(any.component);
    await sup.start();
    await vi.waitFor(() => expect(state('any-work')).toBe('running'), WAIT);
    expect(state('primary-work')).toBe('stopped'); // the role is not known yet

    await sup.setRole('primary', 3);
    await vi.waitFor(() => expect(state('primary-work')).toBe('running'), WAIT);
    expect(primary.terms).toEqual([3]);

    const stepping = sup.setRole('secondary', 4);
    expect(primary.context()?.signal.aborted).toBe(true); // at once, before setRole resolves
    await stepping;
    expect(state('primary-work')).toBe('stopped');
    expect(primary.abortedAtStop).toEqual([true]); // the signal aborted before stop() was called
    expect(state('any-work')).toBe('running');

    await sup.setRole('not-in-group', 0);
    await vi.waitFor(() => expect(state('primary-work')).toBe('running'), WAIT);
    expect(primary.terms).toEqual([3, 0]);
    expect(any.starts).toHaveLength(1);

    journal.length = 0;
    await Promise.all([sup.stop(), sup.stop()]); // idempotent
    await sup.stop();
    expect(sup.status().map((status) => status.state)).toEqual(['stopped', 'stopped']);
    // Primary-only components first (the node gives up its leadership then), then the others; each once.
    expect(journal).toEqual(['stop:primary-work', 'stop:any-work']);
    expect(any.abortedAtStop).toEqual([true]);

    await sup.start();
    await vi.waitFor(() => expect(state('primary-work')).toBe('running'), WAIT);
    await vi.waitFor(() => expect(state('any-work')).toBe('running'), WAIT);
  });

  it('restarts a primary-only component when the term changes', async () => {
    const { supervisor: sup, state } = supervisor();
    const work = probe({ name: 'work', runOn: 'primary' });
    sup.add(work.component);
    await sup.start();
    await sup.setRole('primary', 1);
    await vi.waitFor(() => expect(state('work')).toBe('running'), WAIT);
    await sup.setRole('primary', 2);
    await vi.waitFor(() => expect(work.terms).toEqual([1, 2]), WAIT);
    expect(work.abortedAtStop).toEqual([true]);
  });

  it('abandons a stop() that hangs past the deadline, logs an error naming it, and moves on', async () => {
    const { supervisor: sup, state, errors } = supervisor({ stopTimeoutMs: 150 });
    const stuck = probe({ name: 'stuck', runOn: 'primary', hangStop: true });
    const fine = probe({ name: 'fine', runOn: 'primary' });
    sup.add(stuck.component);
    sup.add(fine.component);
    await sup.start();
    await sup.setRole('primary', 1);
    await vi.waitFor(() => expect(state('stuck')).toBe('running'), WAIT);
    await vi.waitFor(() => expect(state('fine')).toBe('running'), WAIT);

    const before = Date.now();
    await sup.setRole('secondary', 1);
    const took = Date.now() - before;
    expect(took).toBeGreaterThanOrEqual(140);
    expect(took).toBeLessThan(1500);
    expect(state('stuck')).toBe('stopped');
    expect(state('fine')).toBe('stopped');
    expect(stuck.context()?.signal.aborted).toBe(true);
    const abandoned = errors().find((line) => line.msg.includes('did not stop within 150 ms'));
    expect(abandoned?.msg).toContain('stuck');
    expect(abandoned?.['component']).toBe('stuck');

    // Primary again: 'fine' starts; 'stuck' waits until its abandoned stop() ends, so calls never overlap.
    await sup.setRole('primary', 2);
    await vi.waitFor(() => expect(state('fine')).toBe('running'), WAIT);
    expect(stuck.starts).toHaveLength(1);
    stuck.release();
    await vi.waitFor(() => expect(state('stuck')).toBe('running'), WAIT);
    expect(stuck.maxConcurrentCalls()).toBe(1);
  });

  it("bounds the supervisor's own stop() by the deadline too", async () => {
    const { supervisor: sup, state, errors } = supervisor({ stopTimeoutMs: 100 });
    const stuck = probe({ name: 'stuck-any', runOn: 'any', hangStop: true });
    sup.add(stuck.component);
    await sup.start();
    await vi.waitFor(() => expect(state('stuck-any')).toBe('running'), WAIT);
    const before = Date.now();
    await sup.stop();
    expect(Date.now() - before).toBeLessThan(1500);
    expect(errors().some((line) => line.msg.includes('stuck-any'))).toBe(true);
    stuck.release();
  });

  it('stops primary-only components first, then calls afterPrimaryWork, then the others, each kind in reverse order', async () => {
    const { supervisor: sup, state } = supervisor();
    const journal: string[] = [];
    for (const [name, runOn] of [
      ['p1', 'primary'],
      ['a1', 'any'],
      ['p2', 'primary'],
      ['a2', 'any'],
    ] as const) {
      sup.add(probe({ name, runOn, journal }).component);
    }
    await sup.start();
    await sup.setRole('primary', 1);
    await vi.waitFor(() => expect(sup.status().every((s) => s.state === 'running')).toBe(true), WAIT);
    journal.length = 0;
    await sup.stop({ afterPrimaryWork: () => void journal.push('after-primary-work') });
    expect(journal).toEqual(['stop:p2', 'stop:p1', 'after-primary-work', 'stop:a2', 'stop:a1']);
    expect(state('a1')).toBe('stopped');
  });

  it('drains at stop: components finish their work within the drain deadline, then stop', async () => {
    const { supervisor: sup, state, lines } = supervisor({ drainTimeoutMs: 2000 });
    const journal: string[] = [];
    let ctx: ComponentContext | undefined;
    let abortedWhileDraining: boolean | undefined;
    sup.add(
      defineComponent({
        name: 'batches',
        runOn: 'any',
        start: (context) => void (ctx = context),
        drain: async () => {
          journal.push('drain');
          await new Promise((resolve) => setTimeout(resolve, 100));
          abortedWhileDraining = ctx?.signal.aborted;
          journal.push('drained');
        },
        stop: () => void journal.push(`stop (${String(ctx?.signal.aborted)})`),
      }),
    );
    const plain = probe({ name: 'plain', runOn: 'any', journal });
    sup.add(plain.component);
    await sup.start();
    await vi.waitFor(() => expect(state('batches')).toBe('running'), WAIT);
    await vi.waitFor(() => expect(state('plain')).toBe('running'), WAIT);
    journal.length = 0;

    const stopping = sup.stop();
    await vi.waitFor(() => expect(state('batches')).toBe('draining'), WAIT);
    await stopping;
    // The work finished while the run was live; then its signal aborted and stop() ran. Nothing was cut.
    // A component without drain() (added last, so stopped first) had nothing to wait for.
    expect(abortedWhileDraining).toBe(false);
    expect(journal).toEqual(['drain', 'stop:plain', 'drained', 'stop (true)']);
    expect(ctx?.signal.reason).toBeInstanceOf(NodeStoppingError);
    expect(lines.some((line) => line.msg.includes('in-flight batches still running'))).toBe(false);
  });

  it('aborts what is still draining at the deadline, with one log line naming it', async () => {
    const { supervisor: sup, state, lines } = supervisor({ drainTimeoutMs: 150 });
    let ctx: ComponentContext | undefined;
    sup.add(
      defineComponent({
        name: 'slow-batch',
        runOn: 'primary',
        start: (context) => void (ctx = context),
        // Finishes only when its signal aborts (a handler longer than the deadline).
        drain: () => new Promise<void>((resolve) => ctx?.signal.addEventListener('abort', () => resolve())),
        stop: () => undefined,
      }),
    );
    await sup.start();
    await sup.setRole('not-in-group', 0);
    await vi.waitFor(() => expect(state('slow-batch')).toBe('running'), WAIT);
    const before = Date.now();
    await sup.stop();
    const took = Date.now() - before;
    expect(took).toBeGreaterThanOrEqual(140);
    expect(took).toBeLessThan(1500);
    expect(ctx?.signal.reason).toBeInstanceOf(NodeStoppingError);
    const warned = lines.filter((line) => line.msg.includes('in-flight batches still running'));
    expect(warned.map((line) => line.msg)).toEqual([
      'in-flight batches still running after shutdown_timeout_ms (150 ms): aborting them',
    ]);
    expect(warned[0]?.['components']).toEqual(['slow-batch']);
    expect(state('slow-batch')).toBe('stopped');
  });

  it('gives up the leadership while the others still drain', async () => {
    const { supervisor: sup, state } = supervisor({ drainTimeoutMs: 5000 });
    let anyCtx: ComponentContext | undefined;
    let finishDrain = (): void => undefined;
    const primary = probe({ name: 'leader-work', runOn: 'primary' });
    sup.add(primary.component);
    sup.add(
      defineComponent({
        name: 'long-batch',
        runOn: 'any',
        start: (context) => void (anyCtx = context),
        drain: () => new Promise<void>((resolve) => (finishDrain = resolve)),
        stop: () => undefined,
      }),
    );
    await sup.start();
    await sup.setRole('primary', 1);
    await vi.waitFor(() => expect(state('leader-work')).toBe('running'), WAIT);
    await vi.waitFor(() => expect(state('long-batch')).toBe('running'), WAIT);
    let released = false;
    const stopping = sup.stop({ afterPrimaryWork: () => void (released = true) });
    await vi.waitFor(() => expect(released).toBe(true), WAIT);
    expect(primary.stops).toHaveLength(1);
    expect(state('long-batch')).toBe('draining');
    expect(anyCtx?.signal.aborted).toBe(false);
    finishDrain();
    await stopping;
    expect(state('long-batch')).toBe('stopped');
  });

  it('never drains on a step-down: primary-only work is aborted at once, SteppedDownError its reason', async () => {
    const { supervisor: sup, state } = supervisor({ drainTimeoutMs: 5000 });
    let ctx: ComponentContext | undefined;
    let drains = 0;
    sup.add(
      defineComponent({
        name: 'leader-batch',
        runOn: 'primary',
        start: (context) => void (ctx = context),
        drain: () => void (drains += 1),
        stop: () => undefined,
      }),
    );
    await sup.start();
    await sup.setRole('primary', 1);
    await vi.waitFor(() => expect(state('leader-batch')).toBe('running'), WAIT);
    const first = ctx;
    const stepping = sup.setRole('secondary', 2);
    expect(first?.signal.aborted).toBe(true); // at once, before setRole resolves
    expect(first?.signal.reason).toBeInstanceOf(SteppedDownError);
    await stepping;
    expect(drains).toBe(0);

    // A new term restarts the run: the old one is told so, also with SteppedDownError.
    await sup.setRole('primary', 3);
    await vi.waitFor(() => expect(ctx).not.toBe(first), WAIT);
    const second = ctx;
    await sup.setRole('primary', 4);
    expect(second?.signal.reason).toBeInstanceOf(SteppedDownError);
    expect(drains).toBe(0);
  });

  it('aborts a draining primary-only component at once when the node steps down meanwhile', async () => {
    const { supervisor: sup, state } = supervisor({ drainTimeoutMs: 5000 });
    let ctx: ComponentContext | undefined;
    sup.add(
      defineComponent({
        name: 'leader-drain',
        runOn: 'primary',
        start: (context) => void (ctx = context),
        drain: () => new Promise<void>((resolve) => ctx?.signal.addEventListener('abort', () => resolve())),
        stop: () => undefined,
      }),
    );
    await sup.start();
    await sup.setRole('primary', 1);
    await vi.waitFor(() => expect(state('leader-drain')).toBe('running'), WAIT);
    const stopping = sup.stop();
    await vi.waitFor(() => expect(state('leader-drain')).toBe('draining'), WAIT);
    const before = Date.now();
    const stepping = sup.setRole('secondary', 2);
    expect(ctx?.signal.aborted).toBe(true); // at once, not at the drain deadline
    expect(ctx?.signal.reason).toBeInstanceOf(SteppedDownError);
    await Promise.all([stepping, stopping]);
    expect(Date.now() - before).toBeLessThan(2000);
    expect(state('leader-drain')).toBe('stopped');
  });

  it('restarts a failing component with growing back-off, then resets it after a good run', async () => {
    const {
      supervisor: sup,
      state,
      errors,
    } = supervisor({
      backoff: { initialMs: 40, maxMs: 1000, resetAfterMs: 60_000 },
    });
    const flaky = probe({ name: 'flaky', runOn: 'any', failStarts: 3 });
    sup.add(flaky.component);
    await sup.start();
    await vi.waitFor(() => expect(state('flaky')).toBe('running'), WAIT);

    expect(flaky.starts).toHaveLength(4);
    const failures = errors().filter((line) => line.msg.startsWith('component flaky failed; restarting in'));
    expect(failures.map((line) => line['failures'])).toEqual([1, 2, 3]);
    const delays = failures.map((line) => Number(line['restartInMs']));
    // 40, 80 and 160 ms, each ±20 %: the ranges do not overlap, so the delays grow whatever the jitter.
    expect(delays[0]).toBeGreaterThanOrEqual(32);
    expect(delays[0]).toBeLessThanOrEqual(48);
    expect(delays[1]).toBeGreaterThanOrEqual(64);
    expect(delays[2]).toBeGreaterThanOrEqual(128);
    expect(delays[2]).toBeLessThanOrEqual(192);
    // And each restart really waited its delay (a timer may fire a millisecond early).
    const gaps = flaky.starts.slice(1).map((at, index) => at - (flaky.starts[index] ?? 0));
    gaps.forEach((gap, index) => expect(gap).toBeGreaterThanOrEqual((delays[index] ?? 0) - 2));
    const [status] = sup.status();
    expect(status?.restarts).toBe(3);
    expect(status?.lastError).toBe('Error: flaky cannot start');

    // A failure reported later through ctx.fail() restarts it too, after a stop() with an aborted signal.
    flaky.context()?.fail(new Error('lost its way'));
    await vi.waitFor(() => expect(flaky.starts).toHaveLength(5), WAIT);
    await vi.waitFor(() => expect(state('flaky')).toBe('running'), WAIT);
    expect(sup.status()[0]?.lastError).toBe('Error: lost its way');
    expect(flaky.abortedAtStop.every(Boolean)).toBe(true);
  });

  it('resets the back-off when the failed run had lasted long enough', async () => {
    const {
      supervisor: sup,
      state,
      errors,
    } = supervisor({
      backoff: { initialMs: 20, maxMs: 1000, resetAfterMs: 0 },
    });
    const flaky = probe({ name: 'resets', runOn: 'any', failStarts: 4 });
    sup.add(flaky.component);
    await sup.start();
    await vi.waitFor(() => expect(state('resets')).toBe('running'), WAIT);
    const failures = errors().filter((line) => line.msg.startsWith('component resets failed'));
    expect(failures.map((line) => line['failures'])).toEqual([1, 1, 1, 1]);
  });

  it('never runs two calls into one component at once when roles flap quickly', async () => {
    const { supervisor: sup, state } = supervisor();
    const slow = probe({ name: 'slow', runOn: 'primary', startMs: 10, stopMs: 5 });
    sup.add(slow.component);
    await sup.start();
    const changes: Promise<void>[] = [];
    for (let term = 1; term <= 20; term++) {
      const startsBefore = slow.starts.length;
      changes.push(sup.setRole('primary', term));
      // Every other round, flap while a start() is in progress; the others flap before it begins.
      if (term % 2 === 0)
        await vi.waitFor(() => expect(slow.starts.length).toBeGreaterThan(startsBefore), WAIT);
      changes.push(sup.setRole('secondary', term));
      changes.push(sup.setRole('primary', term));
      changes.push(sup.setRole('not-in-group', 0));
      changes.push(sup.setRole('secondary', term));
    }
    changes.push(sup.setRole('primary', 21));
    await Promise.all(changes);
    await vi.waitFor(() => expect(state('slow')).toBe('running'), WAIT);
    expect(slow.starts.length).toBeGreaterThanOrEqual(11);
    expect(slow.maxConcurrentCalls()).toBe(1);
    expect(slow.terms.at(-1)).toBe(21);
    // Every run but the last was stopped, each after its signal aborted.
    expect(slow.stops).toHaveLength(slow.starts.length - 1);
    expect(slow.abortedAtStop.every(Boolean)).toBe(true);
  });

  it('checks the fence with the term of the run, and refuses once the run is over', async () => {
    const checked: number[] = [];
    const { supervisor: sup, state } = supervisor({
      assertPrimary: (_tx, term) => {
        checked.push(term);
        return Promise.resolve();
      },
    });
    const contexts = new Map<string, ComponentContext>();
    for (const runOn of ['primary', 'any'] as const) {
      sup.add(
        defineComponent({
          name: runOn,
          runOn,
          start: (ctx) => void contexts.set(runOn, ctx),
          stop: () => {},
        }),
      );
    }
    await sup.start();
    await sup.setRole('primary', 7);
    await vi.waitFor(() => expect(state('primary')).toBe('running'), WAIT);
    const tx = {} as Tx; // never used: the fence check above is a stand-in
    await contexts.get('primary')?.assertPrimary(tx);
    await contexts.get('any')?.assertPrimary(tx);
    expect(checked).toEqual([7, 7]);

    await sup.setRole('secondary', 8);
    await expect(contexts.get('primary')?.assertPrimary(tx)).rejects.toBeInstanceOf(FencedError);
    await expect(contexts.get('any')?.assertPrimary(tx)).rejects.toBeInstanceOf(NotPrimaryError);
    expect(checked).toEqual([7, 7]);
  });

  it('refuses a component added twice or an invalid one, naming it', () => {
    const { supervisor: sup } = supervisor();
    sup.add(probe({ name: 'twice', runOn: 'any' }).component);
    expect(() => sup.add(probe({ name: 'twice', runOn: 'any' }).component)).toThrow(
      /invalid component twice: a component with this name was already added/,
    );
    const bad = { name: 'bad', runOn: 'leader', start() {}, stop() {} };
    // @ts-expect-error runOn is not a role a component may run on
    expect(() => sup.add(bad)).toThrow(InvalidComponentError);
  });
});
