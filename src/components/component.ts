// The component contract: a long-running unit that the supervisor starts and stops as the node's role
// changes, and restarts with back-off when it fails. Primary-only work is bound to `ctx.signal`, because
// a deposed primary's work that outlives its step-down is how split brains happen. Only a node that stops
// lets components drain (finish what they hold) first.
import { InvalidComponentError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store, Tx } from '../store/store.js';

/** What a component receives for one run (one start, until it is stopped or fails). */
export interface ComponentContext {
  readonly name: string;
  /**
   * Aborts when this run must end: the node stepped down (runOn 'primary'), the term changed, the node is
   * stopping (after the drain), or the run failed. It aborts before stop() is called. Primary-only work must
   * obey it. Its reason is a WorkAbortedError: SteppedDownError, NodeStoppingError, or the base class.
   */
  readonly signal: AbortSignal;
  /** The term this run started under (0 for a node not in a group). */
  readonly term: number;
  /**
   * Inside the caller's transaction: throws FencedError when this node's term is over (this run was
   * stopped, or a newer primary raised the fence), and NotPrimaryError when a runOn 'any' component calls
   * it on a node that is not primary. Resolves when the transaction may act as the primary.
   */
  assertPrimary(tx: Tx): Promise<void>;
  /**
   * Reports that the component failed after start() resolved (its background work broke). The supervisor
   * then aborts `signal`, calls stop() and starts it again after a back-off. Ignored once the run is ending.
   */
  fail(error: unknown): void;
  readonly log: Logger;
  readonly store: Store;
}

/**
 * A component. The contract:
 * - `start(ctx)` resolves once the component is running; long work continues in the background and ends
 *   when `ctx.signal` aborts. A start that throws or rejects is a failure.
 * - A failure after start is reported with `ctx.fail(error)`: the only other way to fail.
 * - `stop()` releases what the current run holds. It is called after `ctx.signal` aborted, after every
 *   run (also a failed or partial one), never while a start() is still pending, and within a hard
 *   deadline: past it the supervisor considers the component stopped and moves on.
 * - `drain()` is optional, and called only when the node stops: the component stops taking new work and
 *   resolves once the work it holds has finished, while `ctx.signal` is still live (a primary still acts
 *   as primary meanwhile). The supervisor waits for it up to the node's drain deadline
 *   (`shutdown_timeout_ms`); then `ctx.signal` aborts and stop() is called as after any run. A step-down
 *   or a new term never drains: primary-only work is aborted at once.
 * - The supervisor never runs two calls (start, drain, stop) of one component at the same time.
 * - `runOn: 'primary'` runs only while the node is primary or not in a group; 'any' runs on every node.
 */
export interface Component {
  readonly name: string;
  readonly runOn: 'primary' | 'any';
  start(ctx: ComponentContext): Promise<void> | void;
  drain?(): Promise<void> | void;
  stop(): Promise<void> | void;
}

export type RunOn = Component['runOn'];

/** A component name: it names the component in logs, status and config. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.:-]*$/;

/** Checks a component definition and returns a frozen copy whose methods keep their `this`. */
export function defineComponent(definition: Component): Component {
  const component = assertComponent(definition, ownName(definition) ?? '(unnamed)');
  return Object.freeze({
    name: component.name,
    runOn: component.runOn,
    start: component.start.bind(component),
    ...(component.drain ? { drain: component.drain.bind(component) } : {}),
    stop: component.stop.bind(component),
  });
}

/**
 * Returns `value` as a Component, or throws InvalidComponentError naming it: `name` is what the caller
 * calls it (a config name or a module path), used when the value carries no usable name of its own.
 */
export function assertComponent(value: unknown, name: string): Component {
  if (isComponent(value)) return value;
  const problem = componentProblem(value) ?? 'not a component';
  const own = ownName(value);
  const label = own ?? name;
  throw new InvalidComponentError(label, label === name ? problem : `${problem} (from ${name})`);
}

export function isComponent(value: unknown): value is Component {
  return componentProblem(value) === undefined;
}

/** What makes `value` not a component, in a sentence; undefined when it is one. */
export function componentProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) {
    return `expected an object with name, runOn, start and stop, got ${typeOf(value)}`;
  }
  const name = 'name' in value ? value.name : undefined;
  if (typeof name !== 'string' || name.length === 0) return 'name must be a non-empty string';
  if (!NAME.test(name)) return `name "${name}" may hold only letters, digits and _ . : - (not first)`;
  const runOn = 'runOn' in value ? value.runOn : undefined;
  if (runOn !== 'primary' && runOn !== 'any') {
    return `runOn must be 'primary' or 'any', got ${describeValue(runOn)}`;
  }
  if (!('start' in value) || typeof value.start !== 'function') return 'start must be a function';
  if (!('stop' in value) || typeof value.stop !== 'function') return 'stop must be a function';
  if ('drain' in value && value.drain !== undefined && typeof value.drain !== 'function') {
    return 'drain must be a function when it is given';
  }
  return undefined;
}

function ownName(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || !('name' in value)) return undefined;
  return typeof value.name === 'string' && value.name.length > 0 ? value.name : undefined;
}

function typeOf(value: unknown): string {
  return value === null ? 'null' : typeof value;
}

function describeValue(value: unknown): string {
  return typeof value === 'string' ? `"${value}"` : typeOf(value);
}
