// The start-up of a node whose store takes no writes (a standby). The node runs (HTTP, role, metrics) but its
// start-up writes, the work of the supervisor and, but for pg-recovery, the election wait until the store takes
// writes. This holds why the node waits, looks every second whether it may stop waiting, and completes the
// start-up one attempt at a time; the node passes it the steps to run.
import type { Group } from '../cluster/group.js';
import type { ElectorKind } from '../config/types.js';
import { BackendUnavailableError, describeError, NotRunningError } from '../errors.js';
import type { EventLog } from '../events/log.js';
import type { Logger } from '../log.js';
import { isReadOnlyError, readOnlyReason } from '../store/read-only.js';
import type { Store } from '../store/store.js';
import { isConnectionError } from '../util/connection-errors.js';

/** How often a node whose store takes no writes (a standby) looks whether it takes them now. */
const WRITABLE_POLL_MS = 1_000;

/** What a deferred start-up needs of its node: values, and the steps of the start-up it runs late. */
export interface DeferredStartParts {
  readonly name: string;
  readonly queueNames: readonly string[];
  readonly log: Logger;
  /** The group's elector; none when the node is not in a group. */
  readonly elector: ElectorKind | undefined;
  readonly group: Pick<Group, 'start' | 'joinMembership'> | undefined;
  readonly events: Pick<EventLog, 'start'> | undefined;
  /** The node's lifecycle state: the start-up completes only while the node runs. */
  state(): string;
  /** The node's store; throws once the node stopped. */
  store(): Store;
  /** Base URL of the node's HTTP API, once it listens. */
  address(): string | undefined;
  /** The start-up's writes to the store, deferred while it takes none. */
  writeAtStart(): Promise<void>;
  /** Starts the work of the supervisor. */
  startWork(): Promise<void>;
  /** Hands the role changes to the supervisor from now on. */
  followRole(): void;
}

/**
 * The pg-recovery elector runs while the node waits: it sees the promotion of the node's server first (the
 * failover files), and the group completes the start-up (complete()) before it raises the fence. A look every
 * second covers the other electors, and a store that takes writes while its node is not promoted.
 */
export class DeferredStart {
  readonly #parts: DeferredStartParts;
  /** Why the node waits for its store to take writes; undefined once its start-up is complete. */
  #waiting: string | undefined;
  #completing: Promise<void> | undefined;
  #writablePoll: NodeJS.Timeout | undefined;

  /** `waiting`: why the store takes no writes at start, or undefined when it takes them (nothing waits). */
  constructor(waiting: string | undefined, parts: DeferredStartParts) {
    this.#waiting = waiting;
    this.#parts = parts;
  }

  /** Why the node waits for its store to take writes; undefined when it does not (or no longer) wait. */
  get waiting(): string | undefined {
    return this.#waiting;
  }

  /** What a waiting node starts at once: the group as far as it can, and the event log when it can. */
  async startWaiting(): Promise<void> {
    const { elector, group, events } = this.#parts;
    if (elector === 'pg-recovery') {
      await group?.start();
    } else {
      // Elected before its store takes writes, the node could not raise the fence: it joins the election
      // once the store takes them. Its heartbeats go out at once when they are kept elsewhere.
      await group?.joinMembership();
    }
    // Read now when Baton's schema came over by replication; else once the store takes writes.
    await events?.start().catch(() => undefined);
  }

  /** Looks every WRITABLE_POLL_MS whether the waiting node's store takes writes, and completes its start-up then. */
  lookForWrites(): void {
    const { log } = this.#parts;
    const look = async (): Promise<void> => {
      if (!this.#waitsWhileRunning()) return;
      try {
        await this.complete();
      } catch (error) {
        const err = describeError(error);
        if (this.#waiting === undefined) {
          log.error({ err }, `could not complete the start-up once the store took writes: ${err}`);
        } else if (
          !isReadOnlyError(error) &&
          !isConnectionError(error) &&
          !(error instanceof BackendUnavailableError)
        ) {
          log.warn({ err }, `could not complete the start-up; trying again: ${err}`);
        }
      }
      if (this.#waitsWhileRunning()) {
        this.#writablePoll = setTimeout(() => void look(), WRITABLE_POLL_MS);
      }
    };
    this.#writablePoll = setTimeout(() => void look(), WRITABLE_POLL_MS);
  }

  /**
   * Completes the start-up of a node that waited for a store that takes writes; rejects (and may be asked
   * again) while the store takes none. Resolves at once for a node that did not wait. One at a time.
   */
  complete(): Promise<void> {
    if (this.#waiting === undefined) return Promise.resolve();
    this.#completing ??= this.#completeWaitingStart().finally(() => {
      this.#completing = undefined;
    });
    return this.#completing;
  }

  /** Stops looking, and lets a completion under way settle: the node stops. */
  async stop(): Promise<void> {
    clearTimeout(this.#writablePoll);
    await this.#completing?.catch(() => undefined);
  }

  async #completeWaitingStart(): Promise<void> {
    const parts = this.#parts;
    const reason = await readOnlyReason(parts.store());
    if (reason !== undefined) {
      this.#waiting = reason;
      throw new BackendUnavailableError('store', reason);
    }
    if (parts.state() !== 'running') throw new NotRunningError(`node ${parts.name} is ${parts.state()}`);
    parts.log.info('the store takes writes now: completing the start-up');
    await parts.writeAtStart();
    await parts.startWork();
    // From here on a promotion is acted on at once (the fence raised, then primary-only work started).
    this.#waiting = undefined;
    clearTimeout(this.#writablePoll);
    parts.followRole();
    // The other electors join the election only now: elected earlier, the node could not have acted.
    if (parts.elector !== 'pg-recovery') await parts.group?.start();
    parts.log.info(
      { queues: parts.queueNames, http: parts.address() },
      `node ${parts.name} start-up complete: queues ${parts.queueNames.join(', ')}`,
    );
  }

  #waitsWhileRunning(): boolean {
    return this.#waiting !== undefined && this.#parts.state() === 'running';
  }
}
