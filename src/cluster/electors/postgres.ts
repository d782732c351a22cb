// The postgres elector: leadership is a session-level advisory lock held by a dedicated connection (the
// elector session), plus a lease row in baton_leases that carries the term and lets the others see a primary
// that is cut off. Waiters block in pg_advisory_lock, so a crash (its session ends, the lock is released)
// hands over in milliseconds. A partitioned primary steps down at renew_deadline_ms on its own monotonic
// clock, before its lease expires; once the lease has expired, a waiter terminates the stale session that
// still holds the lock (the server may think it alive for hours), and the lock passes on.
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';

import pg from 'pg';

import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { APPEND_TO_SEARCH_PATH, DEFAULT_STORE_SCHEMA } from '../../store/baton-schema.js';
import { backoffDelay } from '../../util/backoff.js';
import { sleep } from '../../util/sleep.js';
import type { Elector, ElectorListener, ElectorOptions } from '../types.js';
import { StateReporter } from './reporter.js';

const UNREACHABLE_BACKOFF = { initialMs: 1000, maxMs: 32_000 };
/** How long ending a session may take before its socket is destroyed (a partitioned server never answers). */
const END_TIMEOUT_MS = 1000;
/** Prefix of elector sessions' application_name: how a waiter recognises the stale session of a holder. */
const SESSION_APP = 'baton-elector:';

/**
 * The group's advisory-lock key: a stable signed 64-bit hash, the same on every node and version. Groups of
 * installations in other schemas than the default have keys of their own, though their names be the same.
 */
export function groupLockKey(group: string, schema: string = DEFAULT_STORE_SCHEMA): bigint {
  const name = schema === DEFAULT_STORE_SCHEMA ? group : `${schema}.${group}`;
  const digest = createHash('sha256').update(`baton:group:${name}`).digest();
  return BigInt.asIntN(64, digest.readBigUInt64BE(0));
}

/** pg_locks shows a bigint advisory key as classid (high half) and objid (low half), objsubid 1. */
const HOLDS_KEY = `k.locktype = 'advisory' AND k.granted AND k.objsubid = 1
  AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND k.classid::bigint = $1::bigint AND k.objid::bigint = $2::bigint`;
const MS = `* interval '1 millisecond'`;

const INSERT_LEASE = `INSERT INTO baton_leases (group_name) VALUES ($1) ON CONFLICT (group_name) DO NOTHING`;
const READ_LEASE = `SELECT holder, term, expires_at < now() AS expired,
    GREATEST(0, extract(epoch FROM expires_at - now()) * 1000)::float8 AS remaining_ms
  FROM baton_leases WHERE group_name = $1`;
/**
 * One statement (so one transaction, serialised by the row lock): unless our session ($5 pid) lost the lock
 * meanwhile, or a manual failover named another node that is alive, bump the term and take the lease.
 * $1 $2 key halves, $3 group, $4 this node, $6 lease ms. term is null when nothing was taken.
 */
const TAKE_OVER = `WITH lease AS (
    SELECT l.group_name, l.preferred,
      EXISTS (SELECT 1 FROM pg_locks k WHERE k.pid = $5::int AND ${HOLDS_KEY}) AS locked,
      coalesce(l.preferred <> $4 AND l.preferred_until > now() AND EXISTS (SELECT 1 FROM baton_members m
        WHERE m.group_name = l.group_name AND m.node = l.preferred AND m.last_seen > now() - $6::float8 ${MS}),
        false) AS defer
    FROM baton_leases l WHERE l.group_name = $3 FOR UPDATE),
  taken AS (
    UPDATE baton_leases l SET term = l.term + 1, holder = $4, expires_at = now() + $6::float8 ${MS},
      preferred = NULL, preferred_until = NULL
    FROM lease WHERE l.group_name = lease.group_name AND lease.locked AND NOT lease.defer RETURNING l.term)
  SELECT lease.locked, lease.preferred, (SELECT term FROM taken) AS term FROM lease`;
const RENEW = `UPDATE baton_leases SET expires_at = now() + $4::float8 ${MS}
  WHERE group_name = $1 AND holder = $2 AND term = $3::bigint`;
/** Ends our lease at once; $4 names the node the others should defer to for one lease. */
const RELEASE = `UPDATE baton_leases SET expires_at = now(), holder = NULL, preferred = $4::text,
    preferred_until = CASE WHEN $4::text IS NULL THEN NULL ELSE now() + $5::float8 ${MS} END
  WHERE group_name = $1 AND holder = $2 AND term = $3::bigint`;
/**
 * Terminates the session holding the lock while the lease ($4 at term $5) is expired, when that session is the
 * holder's (application_name $6) or has sat idle on the lock for a whole lease ($7 ms): a live primary renews
 * on its session every heartbeat, a winner takes over within milliseconds. $8: our own session, left alone.
 */
const BREAK_STALE_LOCK = `SELECT k.pid, pg_terminate_backend(k.pid) AS terminated
  FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid
  WHERE ${HOLDS_KEY} AND k.pid <> $8::int
    AND EXISTS (SELECT 1 FROM baton_leases l WHERE l.group_name = $3 AND l.term = $5::bigint
                AND l.holder IS NOT DISTINCT FROM $4::text AND l.expires_at < now())
    AND (a.application_name = $6::text OR (a.application_name LIKE '${SESSION_APP}%' AND a.state = 'idle'
         AND a.state_change < now() - $7::float8 ${MS}))`;
type Row = Record<string, unknown>;

interface Lease {
  readonly holder: string | undefined;
  readonly term: number;
  readonly expired: boolean;
  /** Milliseconds until the lease expires, on the server's clock (0 once expired). */
  readonly remainingMs: number;
}

/** How long after a lease's expiry a waiter looks again: the server's now() must have passed it. */
const PAST_EXPIRY_MS = 5;

/** The elector session: one pg.Client whose life is the lock's life. */
interface Session {
  readonly client: pg.Client;
  pid: number;
  /** Resolves when the connection is gone (ended, failed or terminated by the server). */
  readonly ended: Promise<void>;
  closing?: Promise<void>;
}

/** This node's reign, from 'elected' to its step-down. */
interface Leadership {
  readonly term: number;
  readonly session: Session;
  /** Reports secondary at once (the first call wins) and ends the renew loop. */
  stepDown(cause: string, message: string): void;
  /** Set by a hand-over: clearing the lease, which must finish before the session ends. */
  release?: Promise<unknown>;
}

export class PostgresElector implements Elector {
  readonly kind = 'postgres';
  readonly #options: ElectorOptions & { url: string; schema?: string };
  readonly #log: Logger;
  readonly #key: string;
  readonly #keyHalves: readonly [string, string];
  readonly #stopping = new AbortController();
  readonly #connectTimeoutMs: number;
  readonly #reporter: StateReporter;
  readonly #pool: pg.Pool;
  #session: Session | undefined;
  #leadership: Leadership | undefined;
  /** Monotonic time before which this node does not compete (after a resign, so another node wins). */
  #holdOffUntil = 0;
  #tasks: Promise<void>[] = [];
  #stopped: Promise<void> | undefined;

  /** `schema`: Baton's schema in the elector's database (DEFAULT_STORE_SCHEMA when not given). */
  constructor(options: ElectorOptions & { url: string; log: Logger; schema?: string }) {
    const { log, ...rest } = options;
    this.#options = rest;
    this.#log = log.child({ component: 'elector', elector: 'postgres', group: options.group });
    // The node logs each role change; the logger's context says which elector this is.
    this.#reporter = new StateReporter({ log: this.#log, name: 'elector', logStates: false });
    const schema = options.schema ?? DEFAULT_STORE_SCHEMA;
    const key = groupLockKey(options.group, schema);
    const unsigned = BigInt.asUintN(64, key);
    this.#key = key.toString();
    this.#keyHalves = [(unsigned >> 32n).toString(), (unsigned & 0xffffffffn).toString()];
    this.#connectTimeoutMs = Math.min(5000, Math.max(1000, options.leaseMs));
    // Connects lazily. Lease reads, takeovers and lock breaking are short; a hung one (partition) must fail.
    this.#pool = new pg.Pool({
      connectionString: options.url,
      max: 2,
      application_name: appName(`baton-elector-watch:${options.node}`),
      keepAlive: true,
      connectionTimeoutMillis: this.#connectTimeoutMs,
      idleTimeoutMillis: 10_000,
      statement_timeout: options.renewDeadlineMs,
      query_timeout: options.renewDeadlineMs,
      // Queued before the first statement; a connection that could not run it is dropped (that statement fails).
      onConnect: (client) => {
        client
          .query(APPEND_TO_SEARCH_PATH, [schema])
          .catch(() => (client as pg.Client).connection.stream.destroy());
      },
    });
    this.#pool.on('error', (error) =>
      this.#log.debug({ err: describeError(error) }, 'elector: connection failed'),
    );
    // A checked-out client that fails emits 'error' on itself, which would crash the process without a listener.
    this.#pool.on('connect', (client) => client.on('error', () => undefined));
  }

  async start(listener: ElectorListener): Promise<void> {
    if (this.#reporter.attached || this.#stopping.signal.aborted) return;
    this.#reporter.attach(listener);
    try {
      this.#observe(await this.#readLease());
    } catch (error) {
      this.#log.warn({ err: describeError(error) }, `elector: cannot read the lease (${explain(error)})`);
      this.#reporter.report(
        this.#reporter.state,
        'unreachable',
        `PostgreSQL is unreachable (${explain(error)})`,
      );
    }
    if (!this.#stopping.signal.aborted) this.#tasks = [this.#campaign(), this.#watch()];
  }

  async resign(options: { to?: string } = {}): Promise<void> {
    const leadership = this.#leadership;
    if (!leadership || this.#stopping.signal.aborted) return;
    const to = options.to !== this.#options.node ? options.to : undefined;
    this.#holdOffUntil = performance.now() + 2 * this.#options.heartbeatMs;
    await this.#handOver(leadership, 'resigned', to ? `handing over to ${to}` : 'manual failover', to);
  }

  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      const leadership = this.#leadership;
      if (leadership) await this.#handOver(leadership, 'stopped', 'the node is leaving the group');
      this.#reporter.detach(); // nothing more is reported after stop
      this.#stopping.abort();
      if (this.#session) await this.#endSession(this.#session);
      await Promise.all(this.#tasks);
      await this.#pool.end().catch(() => undefined);
    })();
    return this.#stopped;
  }

  /** Steps down, clears the lease (naming `to`) on the session, then ends the session: the lock passes on. */
  async #handOver(leadership: Leadership, cause: string, message: string, to?: string): Promise<void> {
    const { group, node, leaseMs } = this.#options;
    const params = [group, node, leadership.term, to ?? null, leaseMs];
    // Queued on the session before the step-down, which then leaves the session to this.
    leadership.release ??= this.#withDeadline(
      leadership.session.client.query(RELEASE, params),
      'clear the lease',
    );
    leadership.stepDown(cause, message);
    await leadership.release;
    await this.#endSession(leadership.session);
  }

  /** Competes for the lock, one session at a time, until stop. Never throws. */
  async #campaign(): Promise<void> {
    const { signal } = this.#stopping;
    for (let failures = 0; !signal.aborted;) {
      await sleep(this.#holdOffUntil - performance.now(), signal);
      if (signal.aborted) return;
      let pause = this.#options.heartbeatMs;
      let session: Session | undefined;
      try {
        session = this.#newSession();
        await session.client.connect();
        await this.#ask(session, APPEND_TO_SEARCH_PATH, [this.#options.schema ?? DEFAULT_STORE_SCHEMA]);
        const found = await this.#ask(session, 'SELECT pg_backend_pid() AS pid');
        session.pid = Number(found.rows[0]?.['pid']);
        failures = 0;
        await this.#compete(session);
      } catch (error) {
        failures += 1;
        pause = backoffDelay(failures, UNREACHABLE_BACKOFF);
        const connected = (session?.pid ?? 0) !== 0;
        if (!connected) {
          this.#reporter.report(
            { ...this.#reporter.state, leader: undefined },
            'unreachable',
            `PostgreSQL is unreachable`,
          );
        }
        if (!signal.aborted) {
          this.#log.warn(
            { err: describeError(error), attempt: failures, retryInMs: pause },
            `elector: ${connected ? 'session lost' : 'cannot connect'} (${explain(error)}); retrying in ${pause} ms`,
          );
        }
      } finally {
        if (session) await this.#endSession(session);
      }
      await sleep(pause, signal);
    }
  }

  /** Waits for the lock on `session`, then leads, or defers to the node a manual failover named. */
  async #compete(session: Session): Promise<void> {
    const { group, node, leaseMs, heartbeatMs } = this.#options;
    const { signal } = this.#stopping;
    for (;;) {
      await session.client.query('SELECT pg_advisory_lock($1::bigint)', [this.#key]);
      if (signal.aborted) return;
      // The lease runs from the statement's now(), which is later than this: the deadline errs early.
      const sentAt = performance.now();
      await this.#pool.query(INSERT_LEASE, [group]);
      const params = [...this.#keyHalves, group, node, session.pid, leaseMs];
      const result = await this.#pool.query<Row>(TAKE_OVER, params);
      const row = result.rows[0];
      // Our session lost the lock meanwhile (terminated as stale): start again with a new one.
      if (row?.['locked'] !== true) return;
      if (row['term'] !== null) return this.#lead(session, Number(row['term']), sentAt);
      this.#log.info(`elector: deferring to ${String(row['preferred'])}, named by a manual failover`);
      await this.#ask(session, 'SELECT pg_advisory_unlock($1::bigint)', [this.#key]);
      await sleep(heartbeatMs, signal);
      if (signal.aborted) return;
    }
  }

  /** Reigns on `session`: renews every heartbeat until the lease is lost, the deadline passes or a hand-over. */
  async #lead(session: Session, term: number, takenAt: number): Promise<void> {
    const { group, node, leaseMs, renewDeadlineMs, heartbeatMs } = this.#options;
    const done = new AbortController();
    let deadline: NodeJS.Timeout | undefined;
    const leadership: Leadership = {
      term,
      session,
      stepDown: (cause, message) => {
        if (done.signal.aborted) return;
        done.abort();
        clearTimeout(deadline);
        if (this.#leadership === leadership) this.#leadership = undefined;
        this.#reporter.report({ role: 'secondary', term, leader: undefined }, cause, message);
        // The session ends now (after a hand-over's release): the lock goes with it, and a statement stuck
        // on a cut connection fails instead of holding up the next campaign.
        if (!leadership.release) void this.#endSession(session);
      },
    };
    // On the local monotonic clock, from when the last successful renewal was sent: the lease runs on the
    // server from a later instant, so stepping down at this deadline comes before the lease can expire.
    const arm = (renewedAt: number): void => {
      clearTimeout(deadline);
      deadline = setTimeout(
        () => leadership.stepDown('renew-failed', `no renewal for ${renewDeadlineMs} ms: stepping down`),
        Math.max(0, renewedAt + renewDeadlineMs - performance.now()),
      );
    };
    if (this.#stopping.signal.aborted) {
      // Stopped while taking over: end the new term at once instead of reigning.
      await this.#withDeadline(
        session.client.query(RELEASE, [group, node, term, null, leaseMs]),
        'clear the lease',
      );
      return;
    }
    this.#leadership = leadership;
    this.#reporter.report(
      { role: 'primary', term, leader: node },
      'elected',
      `won the lock: primary of term ${term}`,
    );
    arm(takenAt);
    void session.ended.then(() =>
      leadership.stepDown('lost-lease', 'the elector session ended: the lock is gone'),
    );
    // A renewal stuck on a row lock fails early enough to be retried before the deadline.
    const timeout = Math.max(50, Math.floor(renewDeadlineMs / 2));
    await session.client.query(`SET statement_timeout = ${timeout}`).catch(() => undefined);
    while (!done.signal.aborted) {
      await sleep(heartbeatMs, done.signal);
      if (done.signal.aborted) break;
      const sentAt = performance.now();
      try {
        const result = await session.client.query(RENEW, [group, node, term, leaseMs]);
        if (result.rowCount === 0) leadership.stepDown('lost-lease', 'the lease has a newer term');
        else if (!done.signal.aborted) arm(sentAt);
      } catch (error) {
        if (!done.signal.aborted) this.#log.warn({ err: describeError(error) }, `elector: renewal failed`);
      }
    }
    await leadership.release;
  }

  /** Every heartbeat while not primary: reports the leader, and breaks the lock of an expired holder. */
  async #watch(): Promise<void> {
    const { signal } = this.#stopping;
    const { heartbeatMs } = this.#options;
    let pause = heartbeatMs;
    while (!signal.aborted) {
      await sleep(pause, signal);
      pause = heartbeatMs;
      if (signal.aborted || this.#leadership) continue;
      try {
        const lease = await this.#readLease();
        this.#observe(lease);
        if (lease?.expired && !this.#leadership && !signal.aborted) await this.#breakStaleLock(lease);
        // A lease that expires before the next heartbeat is looked at again just past its expiry: a primary
        // that stopped renewing is replaced at lease_ms, not up to a heartbeat later.
        else if (lease && lease.remainingMs < heartbeatMs) pause = lease.remainingMs + PAST_EXPIRY_MS;
      } catch (error) {
        // The campaign reports and logs an unreachable server; this is the same failure seen twice.
        this.#log.debug({ err: describeError(error) }, 'elector: cannot read the lease');
      }
    }
  }

  /** While not primary: reports the lease's leader (or none). Stale reads (an older term) are ignored. */
  #observe(lease: Lease | undefined): void {
    if (
      this.#leadership ||
      this.#reporter.state.role === 'primary' ||
      (lease && lease.term < this.#reporter.state.term)
    )
      return;
    const term = lease?.term ?? this.#reporter.state.term;
    // Our own unexpired lease after a step-down is no leader: we no longer act on it.
    const leader = lease && !lease.expired && lease.holder !== this.#options.node ? lease.holder : undefined;
    const [cause, message] = leader
      ? ['new-leader', `${leader} is primary (term ${term})`]
      : ['leader-gone', 'no primary at the moment'];
    this.#reporter.report({ role: 'secondary', term, leader }, cause, message);
  }

  async #breakStaleLock(lease: Lease): Promise<void> {
    const holderApp = lease.holder === undefined ? null : appName(SESSION_APP + lease.holder);
    const { group, leaseMs } = this.#options;
    const params = [...this.#keyHalves, group, lease.holder ?? null, lease.term, holderApp, leaseMs];
    const result = await this.#pool.query<Row>(BREAK_STALE_LOCK, [...params, this.#session?.pid ?? 0]);
    for (const row of result.rows) {
      this.#log.warn(
        { pid: row['pid'], holder: lease.holder, term: lease.term },
        `elector: terminated the stale session holding the lock after the lease of term ${lease.term} expired`,
      );
    }
  }

  async #readLease(): Promise<Lease | undefined> {
    const result = await this.#pool.query<Row>(READ_LEASE, [this.#options.group]);
    const row = result.rows[0];
    if (!row) return undefined;
    const holder = typeof row['holder'] === 'string' ? row['holder'] : undefined;
    return {
      holder,
      term: Number(row['term']),
      expired: row['expired'] === true,
      remainingMs: Number(row['remaining_ms']),
    };
  }

  #newSession(): Session {
    const client = new pg.Client({
      connectionString: this.#options.url,
      application_name: appName(SESSION_APP + this.#options.node),
      keepAlive: true,
      keepAliveInitialDelayMillis: this.#options.leaseMs,
      connectionTimeoutMillis: this.#connectTimeoutMs,
    });
    const ended = new Promise<void>((resolve) => {
      client.on('end', () => resolve());
      client.on('error', () => resolve());
    });
    this.#session = { client, pid: 0, ended };
    return this.#session;
  }

  /** Ends a session (idempotent); one whose server does not answer gets its socket destroyed. */
  #endSession(session: Session): Promise<void> {
    session.closing ??= (async () => {
      const ending = session.client.end().catch(() => undefined);
      if (
        (await withTimeout(
          ending.then(() => 'ended'),
          END_TIMEOUT_MS,
        )) !== 'ended'
      ) {
        session.client.connection.stream.destroy();
      }
      if (this.#session === session) this.#session = undefined;
    })();
    return session.closing;
  }

  /** A statement on the session that must not hang on a cut connection (only pg_advisory_lock may wait). */
  async #ask(session: Session, text: string, params: unknown[] = []): Promise<pg.QueryResult<Row>> {
    const result = await withTimeout(session.client.query<Row>(text, params), this.#options.renewDeadlineMs);
    if (!result) throw new Error(`no answer within ${this.#options.renewDeadlineMs} ms`);
    return result;
  }

  /** Waits at most renew_deadline_ms for a statement on a session that may be cut off; logs a failure. */
  #withDeadline(work: Promise<unknown>, what: string): Promise<unknown> {
    const logged = work.catch((error: unknown) =>
      this.#log.warn({ err: describeError(error) }, `elector: cannot ${what}`),
    );
    return withTimeout(logged, this.#options.renewDeadlineMs);
  }
}

/** The application_name the server keeps: 63 bytes (NAMEDATALEN - 1), never half a character. */
function appName(name: string): string {
  let kept = '';
  for (const char of name) {
    if (Buffer.byteLength(kept + char) > 63) break;
    kept += char;
  }
  return kept;
}

/** Resolves to the promise's value, or undefined after `ms`. */
async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  const timer = new AbortController();
  try {
    return await Promise.race([promise, sleep(ms, timer.signal).then(() => undefined)]);
  } finally {
    timer.abort();
  }
}

function explain(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'code' in error && error.code === '42P01') {
    return "baton_leases is missing: apply Baton's migrations to the elector's database";
  }
  return error instanceof Error ? error.message : String(error);
}
