// The pg-recovery elector (Hermes): there is no election among nodes. A node is primary while its local
// PostgreSQL is not in recovery (`SELECT pg_is_in_recovery()` is false), and secondary while it is a standby
// or cannot be reached. The role is re-checked every check interval, and at once when a failover file (e.g.
// `standby.signal`) appears, changes or goes away in the watched folder, which is how a promotion or a
// demotion of the local server shows first.
import type { FSWatcher } from 'node:fs';
import { watch } from 'node:fs';

import pg from 'pg';

import { Alarm } from '../../util/sleep.js';
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { DEFAULT_FAILOVER_FILES } from '../../config/schema.js';
import { APPEND_TO_SEARCH_PATH, DEFAULT_STORE_SCHEMA } from '../../store/baton-schema.js';
import { backoffDelay } from '../../util/backoff.js';
import type { Elector, ElectorListener, ElectorOptions } from '../types.js';
import { StateReporter } from './reporter.js';

/** Editors and PostgreSQL itself touch a file in several steps: one check for a burst of events. */
const DEBOUNCE_MS = 50;
const RECONNECT_BACKOFF = { initialMs: 1_000, maxMs: 32_000 };
/** Between reports of a promotion that the node could not act on (see resign()). */
const PROMOTION_RETRY_BACKOFF = { initialMs: 250, maxMs: 8_000 };
const CONNECT_TIMEOUT_MS = 5_000;
const QUERY_TIMEOUT_MS = 5_000;

export interface PgRecoveryElectorOptions extends ElectorOptions {
  /** The local PostgreSQL server, whose role is this node's role. */
  readonly url: string;
  /** Baton's schema there (where the fence is read). Default DEFAULT_STORE_SCHEMA. */
  readonly schema?: string;
  /** Folder to watch for failover files (usually the server's data directory); none: no watching. */
  readonly watchPath?: string;
  /** Names (not paths) of the files under watchPath that trigger a check. Default DEFAULT_FAILOVER_FILES. */
  readonly failoverFiles?: readonly string[];
  /** How often the role is re-checked without a file event. Default heartbeatMs. */
  readonly checkIntervalMs?: number;
  readonly log: Logger;
  /** Replaces the `pg_is_in_recovery()` query (tests flip it); rejecting means "unreachable". */
  readonly isInRecovery?: () => Promise<boolean>;
}

export class PgRecoveryElector implements Elector {
  readonly kind = 'pg-recovery';
  readonly #options: PgRecoveryElectorOptions;
  readonly #log: Logger;
  readonly #intervalMs: number;
  readonly #failoverFiles: ReadonlySet<string>;
  readonly #reporter: StateReporter;
  #client: pg.Client | undefined;
  /** The highest term this node knows: its own promotions and the fence it read. */
  #term = 0;
  /** Consecutive failed checks: the back-off exponent. */
  #failures = 0;
  /** Promotions in a row that the node could not act on (resign() after each): the back-off exponent. */
  #refusals = 0;
  /** Until then, a server that is a primary is not reported as a promotion again (see resign()). */
  #retryPromotionAt = 0;
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;
  /** A failover file changed: check again without waiting for the interval. */
  #recheck = false;
  /** Cut short when something happens that is worth a look now. */
  readonly #alarm = new Alarm();
  #starting: Promise<void> | undefined;
  #loop: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;

  constructor(options: PgRecoveryElectorOptions) {
    this.#options = options;
    this.#log = options.log;
    this.#reporter = new StateReporter({ log: options.log, name: 'pg-recovery elector', logStates: true });
    this.#intervalMs = options.checkIntervalMs ?? options.heartbeatMs;
    this.#failoverFiles = new Set(options.failoverFiles ?? DEFAULT_FAILOVER_FILES);
  }

  start(listener: ElectorListener): Promise<void> {
    return (this.#starting ??= this.#start(listener));
  }

  async #start(listener: ElectorListener): Promise<void> {
    this.#reporter.attach(listener);
    this.#watch();
    const delay = await this.#check();
    if (this.#stopping) return;
    this.#loop = this.#run(delay);
  }

  async #run(firstDelay: number): Promise<void> {
    let delay = firstDelay;
    while (!this.#stopping) {
      if (!this.#recheck) await this.#alarm.sleep(delay);
      this.#recheck = false;
      if (this.#stopping) return;
      delay = await this.#check();
    }
  }

  /** Asks the server its role and reports it; resolves with the delay before the next check. Never throws. */
  async #check(): Promise<number> {
    let inRecovery: boolean;
    try {
      inRecovery = await this.#inRecovery();
    } catch (error) {
      if (this.#stopping) return 0;
      this.#failures++;
      this.#disconnect();
      const delay = backoffDelay(this.#failures, RECONNECT_BACKOFF);
      const err = describeError(error);
      this.#log.warn(
        { err, retryInMs: delay },
        `pg-recovery elector: cannot reach PostgreSQL; retrying in ${delay} ms`,
      );
      this.#reporter.report({ role: 'secondary', term: this.#term, leader: undefined }, 'unreachable', err);
      return delay;
    }
    if (this.#failures > 0) this.#log.info('pg-recovery elector: PostgreSQL answers again');
    this.#failures = 0;
    if (this.#stopping) return 0;
    if (inRecovery) {
      this.#refusals = 0;
      const message = 'the local PostgreSQL is in recovery (a standby)';
      this.#reporter.report({ role: 'secondary', term: this.#term, leader: undefined }, 'demoted', message);
    } else if (this.#reporter.state.role !== 'primary') {
      const wait = this.#retryPromotionAt - performance.now();
      if (wait > 0) return Math.min(wait, this.#intervalMs);
      const term = await this.#nextTerm();
      if (this.#stopping) return 0;
      const message = `the local PostgreSQL is not in recovery (a primary); term ${term}`;
      this.#reporter.report({ role: 'primary', term, leader: this.#options.node }, 'promoted', message);
    } else {
      this.#refusals = 0; // acting as primary, still
    }
    return this.#intervalMs;
  }

  async #inRecovery(): Promise<boolean> {
    if (this.#options.isInRecovery) return this.#options.isInRecovery();
    const client = await this.#connect();
    const { rows } = await client.query<{ recovery: unknown }>('SELECT pg_is_in_recovery() AS recovery');
    const recovery = rows[0]?.recovery;
    if (typeof recovery !== 'boolean') throw new TypeError('pg_is_in_recovery() returned no boolean');
    return recovery;
  }

  /**
   * The term of a promotion: one above both this node's counter and the group's fence, read from this
   * server when it has the table. After a failover the fence came over by replication from the old
   * primary, so the new term is above the terms the old primary used even though this node never saw them.
   */
  async #nextTerm(): Promise<number> {
    try {
      const client = await this.#connect();
      const { rows: exists } = await client.query<{ found: unknown }>(
        "SELECT to_regclass('baton_fence') IS NOT NULL AS found",
      );
      if (exists[0]?.found === true) {
        const { rows } = await client.query<{ term: unknown }>(
          'SELECT coalesce(max(term), 0)::text AS term FROM baton_fence WHERE group_name = $1',
          [this.#options.group],
        );
        const fence = Number(rows[0]?.term);
        if (Number.isSafeInteger(fence)) this.#term = Math.max(this.#term, fence);
      }
    } catch (error) {
      const err = describeError(error);
      this.#log.warn({ err }, 'pg-recovery elector: could not read the fence; counting from this node only');
    }
    this.#term += 1;
    return this.#term;
  }

  async #connect(): Promise<pg.Client> {
    if (this.#client) return this.#client;
    const client = new pg.Client({
      connectionString: this.#options.url,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
      application_name: `baton ${this.#options.node} (pg-recovery elector)`,
    });
    // A connection that dies between checks is replaced at the next one.
    client.on('error', () => {
      if (this.#client === client) this.#disconnect();
    });
    this.#client = client;
    try {
      await client.connect();
      await client.query(APPEND_TO_SEARCH_PATH, [this.#options.schema ?? DEFAULT_STORE_SCHEMA]);
    } catch (error) {
      this.#disconnect();
      throw error;
    }
    return client;
  }

  #disconnect(): void {
    const client = this.#client;
    this.#client = undefined;
    client?.end().catch(() => undefined);
  }

  #watch(): void {
    const folder = this.#options.watchPath;
    if (folder === undefined) return;
    try {
      this.#watcher = watch(folder, { persistent: false }, (_event, filename) => {
        // Some platforms do not say which file changed: check then, since it may have been one of ours.
        if (filename === null || this.#failoverFiles.has(filename)) this.#fileChanged(filename);
      });
    } catch (error) {
      const err = describeError(error);
      this.#log.warn(
        { err, folder },
        `pg-recovery elector: cannot watch ${folder}; checking every ${this.#intervalMs} ms only`,
      );
      return;
    }
    this.#watcher.on('error', (error: unknown) => {
      const err = describeError(error);
      this.#log.warn({ err, folder }, `pg-recovery elector: stopped watching ${folder}`);
      this.#watcher?.close();
      this.#watcher = undefined;
    });
  }

  #fileChanged(filename: string | null): void {
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      if (this.#stopping) return;
      this.#log.info(
        { file: filename },
        'pg-recovery elector: a failover file changed; checking the role now',
      );
      this.#recheck = true;
      this.#alarm.wake();
    }, DEBOUNCE_MS);
  }

  /**
   * A manual failover is not supported: the role follows the database, so only promoting or demoting the
   * local server changes it. When the node could not act on the promotion this elector reported (`refused`:
   * its fence raise failed, the store unreachable for a moment, say), the promotion is not dropped: the
   * elector forgets it and reports it again, with a new term, after a back-off, until the node acts or its
   * server is a standby again.
   */
  resign(options: { to?: string; refused?: boolean } = {}): Promise<void> {
    if (!options.refused) {
      this.#log.warn('pg-recovery elector: resign is not supported; promote or demote PostgreSQL instead');
      return Promise.resolve();
    }
    if (this.#stopping || this.#reporter.state.role !== 'primary') return Promise.resolve();
    this.#refusals++;
    const delay = backoffDelay(this.#refusals, PROMOTION_RETRY_BACKOFF);
    this.#retryPromotionAt = performance.now() + delay;
    const message = `the node could not act as primary; reporting the promotion again in ${delay} ms`;
    this.#log.warn({ retryInMs: delay }, `pg-recovery elector: ${message}`);
    this.#reporter.report({ role: 'secondary', term: this.#term, leader: undefined }, 'resigned', message);
    return Promise.resolve();
  }

  stop(): Promise<void> {
    return (this.#stopping ??= this.#stop());
  }

  async #stop(): Promise<void> {
    this.#watcher?.close();
    this.#watcher = undefined;
    clearTimeout(this.#debounce);
    this.#alarm.wake();
    if (this.#reporter.state.role === 'primary') {
      this.#reporter.report(
        { role: 'secondary', term: this.#term, leader: undefined },
        'stopped',
        'leaving the group',
      );
    }
    // Ending the connection also ends a check in flight, so that stopping never waits for a slow server.
    this.#disconnect();
    await this.#starting?.catch(() => undefined);
    await this.#loop;
    this.#disconnect();
  }
}
