// The event log on the store (PGlite or PostgreSQL): append with server-assigned offsets, read in offset
// order, follow new events, and keep the offsets of named listeners.
//
// Offsets become visible in order. An append locks the single head row, takes the next offsets from it and
// keeps the lock until it commits, so appends commit one after another in offset order: whenever offset N
// is visible, every lower offset that will ever exist is visible too. A reader that asks for "offset > the
// last one I saw" can therefore never skip an event that committed late (the classic bug of logs that take
// offsets from a sequence, where a lower offset may commit after a higher one has been read).
//
// Followers wait on the head this process knows: advanced after each local commit, and from NOTIFY on a
// server store so that appends by other nodes wake them too; a slow timer re-reads in case one is missed.
import { sql, type SQL } from 'drizzle-orm';

import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { batonChannel } from '../store/baton-schema.js';
import type { Row, Store, Tx } from '../store/store.js';
import { executeIn } from '../store/store.js';
import type { NormalizedEvent } from './append.js';
import { appendedEvents, appendStatement, EVENTS_CHANNEL } from './append.js';
import type { AppendedEvent, EventCount, EventInput, EventQuery, ListenerLag, StoredEvent } from './types.js';
import { checkListenerName, checkQuery, InvalidEventError, normalizeEvent } from './types.js';
import { RecentEvents } from './recent.js';

/** How long a follower waits for a wake-up before it reads again anyway. */
const FOLLOW_POLL_MS = 1_000;
/** The earliest timestamp PostgreSQL can hold, 4714-11-24 BC (plus a second), in ms since 1970. */
const EARLIEST_TIMESTAMP_MS = -210_866_803_200_000 + 1_000;
/** Rows read per query when the caller sets no limit. */
const DEFAULT_LIMIT = 1_000;
/** Events deleted per transaction by prune(). */
export const PRUNE_BATCH = 10_000;
/** Events counted at most by count() unless told otherwise. */
export const DEFAULT_COUNT_CAP = 100_000;
/** Listener name under which a listener of every namespace keeps its offset. */
export const ALL_NAMESPACES = '*';

/** Appends inside a caller's transaction; the log learns of them once that transaction commits. */
export type AppendInTx = (events: readonly EventInput[]) => Promise<AppendedEvent[]>;

export class EventLog {
  readonly #store: Store;
  readonly #log: Logger;
  #head = 0;
  readonly #waiters = new Set<() => void>();
  #listening: Promise<() => Promise<void>> | undefined;
  #closed = false;
  #appended = 0;
  readonly #recent = new RecentEvents();

  constructor(store: Store, log: Logger) {
    this.#store = store;
    this.#log = log.child({ part: 'events' });
  }

  /** Reads the head. */
  async start(): Promise<void> {
    this.#advance(await this.latestOffset());
  }

  async close(): Promise<void> {
    this.#closed = true;
    const unlisten = await this.#listening?.catch(() => undefined);
    await unlisten?.();
    this.#wakeAll();
  }

  /**
   * On a server store, listens for the appends of other nodes, from the first wait on: only followers need
   * it, so a process that only appends or reads (a CLI command) holds no LISTEN connection.
   */
  #listen(): void {
    if (this.#listening || this.#closed || !this.#store.listen) return;
    this.#listening = this.#store.listen(
      batonChannel(this.#store.schema, EVENTS_CHANNEL),
      (notification) => this.#advance(Number(notification.payload)),
      // Notifications sent while disconnected are lost: read the head again after each (re)connection.
      () =>
        void this.latestOffset().then(
          (offset) => this.#advance(offset),
          () => undefined,
        ),
    );
    this.#listening.catch((error: unknown) => {
      this.#log.warn({ err: describeError(error) }, 'cannot listen for events of other nodes; polling');
    });
  }

  /** Events this process appended (not counting ignored resends) since it started. */
  get appended(): number {
    return this.#appended;
  }

  /** The highest offset this process knows to be committed. */
  get head(): number {
    return this.#head;
  }

  /** Appends events in one transaction and returns them with their offsets, in the order given. */
  async append(events: readonly EventInput[]): Promise<AppendedEvent[]> {
    return this.transaction((_tx, append) => append(events));
  }

  /**
   * Runs `fn` in a store transaction in which it may append events (and write anything else, e.g. a
   * listener's offset or a task run): all of it commits together, then followers are woken.
   */
  async transaction<T>(fn: (tx: Tx, append: AppendInTx) => Promise<T>): Promise<T> {
    let last = 0;
    const fresh: StoredEvent[] = [];
    const result = await this.#store.transaction((tx) =>
      fn(tx, async (events) => {
        const appended = await this.appendIn(tx, events);
        for (const event of appended) {
          last = Math.max(last, event.offset);
          if (!event.duplicate) fresh.push(storedPart(event));
        }
        return appended;
      }),
    );
    this.#appended += fresh.length;
    // Committed: followers of this process may now take these from memory rather than from the store.
    this.#recent.add(fresh);
    if (last > 0) this.#advance(last);
    return result;
  }

  /**
   * Appends inside `tx`. The head row stays locked until `tx` ends, so keep such transactions short.
   * Prefer `transaction()`, which also wakes followers after the commit.
   */
  async appendIn(tx: Tx, inputs: readonly EventInput[]): Promise<AppendedEvent[]> {
    const events = inputs.map((input, index) =>
      normalizeEvent(input, inputs.length === 1 ? 'event' : `events[${index}]`),
    );
    if (events.length === 0) return [];
    const idempotent = events.some((event) => event.clientId !== undefined);
    // Take the head's lock first: from here on no other append runs, so the duplicate check cannot race.
    if (idempotent) await executeIn(tx, sql`SELECT 1 FROM baton_event_head WHERE id = 1 FOR UPDATE`);
    const earlier = idempotent ? await this.#stored(tx, events) : new Map<string, StoredEvent>();
    // Each event is fresh (inserted at `index`), a resend of an earlier append, or a resend within this one.
    const plan: Array<{ index: number; duplicate: boolean } | StoredEvent> = [];
    const fresh: typeof events = [];
    const firstHere = new Map<string, number>();
    for (const event of events) {
      const id = producerId(event);
      const before = id === undefined ? undefined : earlier.get(id);
      const here = id === undefined ? undefined : firstHere.get(id);
      if (before) plan.push(before);
      else if (here !== undefined) plan.push({ index: here, duplicate: true });
      else {
        if (id !== undefined) firstHere.set(id, fresh.length);
        plan.push({ index: fresh.length, duplicate: false });
        fresh.push(event);
      }
    }
    const inserted = fresh.length > 0 ? await this.#insert(tx, fresh) : [];
    return plan.map((step) =>
      'offset' in step
        ? { ...step, duplicate: true }
        : { ...(inserted[step.index] as StoredEvent), duplicate: step.duplicate },
    );
  }

  /** Events matching `query`, in offset order. */
  async list(query: EventQuery = {}): Promise<StoredEvent[]> {
    checkQuery(query);
    const rows = await this.#walkingIndexes(matching(query, query.limit ?? DEFAULT_LIMIT, { ordered: true }));
    return rows.map(toEvent);
  }

  /**
   * How many events match `query` (its limit is ignored), counted up to `upTo` (default
   * DEFAULT_COUNT_CAP): `capped` says the count stopped there, so that a count costs what reading that many
   * index entries costs, whatever the log's size.
   */
  async count(query: EventQuery = {}, upTo: number = DEFAULT_COUNT_CAP): Promise<EventCount> {
    checkQuery(query);
    if (!Number.isSafeInteger(upTo) || upTo < 1)
      throw new InvalidEventError('cap: expected a positive integer');
    const rows = await this.#walkingIndexes(
      sql`SELECT count(*)::bigint AS n FROM (${matching(query, upTo, { ordered: false })}) AS counted`,
    );
    const count = Number(rows[0]?.['n'] ?? 0);
    return { count, capped: count >= upTo };
  }

  /** The offset of the last event created at or before `time` (0 when none): listen "from" it to get later ones. */
  async offsetAt(time: Date | number): Promise<number> {
    const ms = typeof time === 'number' ? time : time.getTime();
    if (!Number.isFinite(ms)) throw new InvalidEventError('time: expected a date or milliseconds since 1970');
    // Before the earliest time PostgreSQL can hold (4714 BC) no event exists.
    if (ms < EARLIEST_TIMESTAMP_MS) return 0;
    const rows = await this.#store.execute(sql`
      SELECT "offset" FROM baton_events WHERE create_time <= to_timestamp(${ms / 1000})
      ORDER BY create_time DESC, "offset" DESC LIMIT 1`);
    return Number(rows[0]?.['offset'] ?? 0);
  }

  /** The highest committed offset (0 for an empty log). */
  async latestOffset(): Promise<number> {
    const rows = await this.#store.execute(sql`SELECT last_offset FROM baton_event_head WHERE id = 1`);
    return Number(rows[0]?.['last_offset'] ?? 0);
  }

  /**
   * Resolves once an offset above `offset` is known to be committed, or after `timeoutMs`, or when `signal`
   * aborts. Followers read again either way.
   */
  waitBeyond(offset: number, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    if (this.#head > offset || options.signal?.aborted) return Promise.resolve();
    this.#listen();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        options.signal?.removeEventListener('abort', done);
        resolve();
      };
      const wake = (): void => {
        if (this.#head > offset || options.signal?.aborted) done();
      };
      const timer = setTimeout(done, options.timeoutMs ?? FOLLOW_POLL_MS);
      this.#waiters.add(wake);
      options.signal?.addEventListener('abort', done, { once: true });
    });
  }

  /**
   * Follows the log from `after` (exclusive): yields batches of matching events in offset order as they
   * commit, until `signal` aborts. Never skips or repeats an offset.
   */
  async *follow(
    query: Omit<EventQuery, 'after' | 'to'> & { after: number },
    signal: AbortSignal,
  ): AsyncGenerator<StoredEvent[]> {
    let after = query.after;
    while (!signal.aborted) {
      // Every offset up to the head read *before* the query is visible to it (appends commit in order).
      const known = this.#head;
      const events = this.#recent.between(after, known, query) ?? (await this.list({ ...query, after }));
      const last = events.at(-1);
      if (last) {
        after = last.offset;
        yield events;
        continue;
      }
      after = Math.max(after, known);
      await this.waitBeyond(after, { signal });
    }
  }

  /** The stored offset of a named listener, or undefined when it never committed one. */
  async listenerOffset(namespace: string, name: string): Promise<number | undefined> {
    checkListenerName(name);
    const rows = await this.#store.execute(sql`
      SELECT "offset" FROM baton_event_listeners WHERE namespace = ${namespace} AND name = ${name}`);
    return rows[0] === undefined ? undefined : Number(rows[0]['offset']);
  }

  /**
   * Stores a named listener's offset (it never moves back), inside `tx` when given so that it commits with
   * the effects of the events it covers.
   */
  async commitListenerOffset(namespace: string, name: string, offset: number, tx?: Tx): Promise<void> {
    checkListenerName(name);
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new InvalidEventError('offset: expected an integer >= 0');
    }
    const statement = sql`
      INSERT INTO baton_event_listeners (namespace, name, "offset") VALUES (${namespace}, ${name}, ${offset})
      ON CONFLICT (namespace, name) DO UPDATE
        SET "offset" = greatest(baton_event_listeners."offset", excluded."offset"), updated_at = now()`;
    if (tx) await executeIn(tx, statement);
    else await this.#store.execute(statement);
  }

  /**
   * How far each named listener is behind: the head's offset less its own (offsets behind, read from two
   * small tables whatever the log's size; for a listener of one namespace, an upper bound on its events
   * behind). With `countUpTo`, also its namespace's events after its offset, counted up to that many by a
   * walk of the (namespace, offset) index: `eventsBehindCapped` says the count stopped there.
   */
  async listenerLags(options: { countUpTo?: number } = {}): Promise<ListenerLag[]> {
    const cap = options.countUpTo;
    const counted =
      cap === undefined
        ? sql`NULL::bigint`
        : sql`CASE WHEN l.namespace = ${ALL_NAMESPACES} THEN least(h.last_offset - l."offset", ${cap})
                   ELSE (SELECT count(*) FROM (
                           SELECT 1 FROM baton_events e
                           WHERE (e.namespace, e."offset") > (l.namespace, l."offset")
                             AND (e.namespace, e."offset") <= (l.namespace, ${String(LAST_POSSIBLE_OFFSET)}::bigint)
                           ORDER BY e.namespace, e."offset" LIMIT ${cap}) AS behind) END`;
    const statement = sql`
      SELECT l.namespace, l.name, greatest(h.last_offset - l."offset", 0)::bigint AS lag,
             (${counted})::bigint AS events_behind
      FROM baton_event_listeners l CROSS JOIN baton_event_head h
      WHERE h.id = 1 ORDER BY l.namespace, l.name`;
    const rows = await (cap === undefined ? this.#store.execute(statement) : this.#walkingIndexes(statement));
    return rows.map((row) => {
      const lag = { namespace: String(row['namespace']), name: String(row['name']), lag: Number(row['lag']) };
      if (cap === undefined || row['events_behind'] === null) return lag;
      const eventsBehind = Math.max(0, Number(row['events_behind']));
      return { ...lag, eventsBehind, eventsBehindCapped: eventsBehind >= cap };
    });
  }

  /**
   * Gives a named listener its first offset, `at` or the current head, unless it already has one (then it
   * keeps it). Returns the listener's offset.
   */
  async initListenerOffset(namespace: string, name: string, at?: number): Promise<number> {
    checkListenerName(name);
    await this.#store.execute(sql`
      INSERT INTO baton_event_listeners (namespace, name, "offset")
      SELECT ${namespace}, ${name}, ${at === undefined ? sql`last_offset` : sql`${at}::bigint`}
      FROM baton_event_head WHERE id = 1
      ON CONFLICT (namespace, name) DO NOTHING`);
    return (await this.listenerOffset(namespace, name)) ?? 0;
  }

  /**
   * Deletes events created more than `olderThanMs` ago, PRUNE_BATCH per transaction; returns how many.
   * The head (and offsets) stay.
   */
  async prune(olderThanMs: number): Promise<number> {
    let pruned = 0;
    for (;;) {
      const batch = await this.#store.transaction((tx) => this.pruneIn(tx, olderThanMs, PRUNE_BATCH));
      pruned += batch;
      if (batch < PRUNE_BATCH) break;
    }
    if (pruned > 0) this.#log.info({ pruned }, `deleted ${pruned} events past their retention`);
    return pruned;
  }

  /**
   * Deletes in the caller's transaction (one that checked the fence, say) up to `limit` of the oldest
   * events created more than `olderThanMs` ago; returns how many. Bounded, so that a first retention over a
   * large log is many short transactions, not one that holds millions of row locks and WAL at once.
   */
  async pruneIn(tx: Tx, olderThanMs: number, limit: number = PRUNE_BATCH): Promise<number> {
    const rows = await executeIn(
      tx,
      // ARRAY(…): the oldest `limit` through the create_time index, then one probe each by offset.
      sql`
      WITH gone AS (
        DELETE FROM baton_events WHERE "offset" = ANY(ARRAY(
          SELECT "offset" FROM baton_events
          WHERE create_time < now() - make_interval(secs => ${olderThanMs / 1000})
          ORDER BY create_time LIMIT ${limit}))
        RETURNING 1)
      SELECT count(*)::bigint AS n FROM gone`,
    );
    const pruned = Number(rows[0]?.['n'] ?? 0);
    // The events kept in memory may be among them; they are only a cache, so a rollback loses nothing.
    if (pruned > 0) this.#recent.clear();
    return pruned;
  }

  /** Runs a read of the log with the planner told to walk indexes (see WALK_INDEXES). */
  async #walkingIndexes(statement: SQL): Promise<Row[]> {
    return this.#store.transaction(async (tx) => {
      await executeIn(tx, WALK_INDEXES);
      return executeIn(tx, statement);
    });
  }

  async #stored(tx: Tx, events: readonly EventInput[]): Promise<Map<string, StoredEvent>> {
    const keyed = events.filter((event) => event.clientId !== undefined);
    const rows = await executeIn(
      tx,
      // One index probe per sent pair. As a plain join the planner prefers a scan of the whole log once the
      // batch is large, which makes every batched append slower as the log grows; LIMIT keeps the subquery
      // (and so the probe) from being flattened into such a join.
      sql`
      SELECT e."offset", e.namespace, e.key, e.value, e.context, e.sender, p.client_id, p.client_seq,
             (extract(epoch FROM e.create_time) * 1000)::float8 AS create_ms
      FROM unnest(${sql.param(keyed.map((event) => event.clientId))}::text[],
                  ${sql.param(keyed.map((event) => event.seq))}::bigint[]) AS p(client_id, client_seq)
      CROSS JOIN LATERAL (
        SELECT x."offset", x.namespace, x.key, x.value, x.context, x.sender, x.create_time
        FROM baton_events x
        WHERE x.client_id IS NOT NULL AND x.client_id = p.client_id AND x.client_seq = p.client_seq
        LIMIT 1) e`,
    );
    return new Map(
      rows.map((row) => [`${String(row['client_id'])}\u0000${String(row['client_seq'])}`, toEvent(row)]),
    );
  }

  async #insert(tx: Tx, events: readonly NormalizedEvent[]): Promise<StoredEvent[]> {
    const [head] = await executeIn(tx, appendStatement(events, this.#store.schema, { qualified: false }));
    return appendedEvents(head, events);
  }

  #advance(offset: number): void {
    if (!Number.isSafeInteger(offset) || offset <= this.#head) return;
    this.#head = offset;
    this.#wakeAll();
  }

  #wakeAll(): void {
    for (const wake of [...this.#waiters]) wake();
  }
}

function storedPart(event: AppendedEvent): StoredEvent {
  const { duplicate: _duplicate, ...stored } = event;
  return stored;
}

function producerId(event: EventInput): string | undefined {
  return event.clientId === undefined ? undefined : `${event.clientId}\u0000${String(event.seq)}`;
}

const EVENT_COLUMNS = sql.raw(
  `e."offset", e.namespace, e.key, e.value, e.context, e.sender,
   (extract(epoch FROM e.create_time) * 1000)::float8 AS create_ms`,
);

/**
 * For the transaction of a read of the log: no bitmap or sequential scans (and so no compiling, which
 * their cost would set off). Without statistics the planner takes a namespace, or a range of offsets, for
 * a few rows, and would fetch all of them to sort them, which for a large namespace reads all of it; an
 * index walked in order stops at the read's limit. Exported for the tests of the plans.
 */
export const WALK_INDEXES = sql`SELECT set_config('enable_bitmapscan', 'off', true),
  set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true)`;

/** The highest offset a bigint holds: the upper end of a walk with no `to`. */
const LAST_POSSIBLE_OFFSET = 9_223_372_036_854_775_807n;

/**
 * The first `limit` events matching `query` (in offset order when `ordered`), as a statement whose plan
 * walks an index in order from the query's offset, with or without statistics: a namespace alone walks
 * (namespace, offset); one key walks (namespace, key, offset); several keys are one such walk per key (a
 * lateral join over the keys, each walk limited), merged by offset; keys without a namespace walk each
 * namespace in turn (found by skipping along the index; there are few); no filter walks the primary key.
 * `key = ANY(array)` reads every event of those keys before it can return the first.
 *
 * A namespace's walk is written as a range of rows, `(namespace, offset) > (n, after) AND … <= (n, to)`,
 * not as `namespace = n AND offset > after`: without statistics the planner takes that equality for a few
 * rows and fetches them all through a bitmap to sort them, which for a large namespace reads all of it;
 * a range it takes for a large share of the table, best walked in order and stopped at the limit. A key's
 * equalities on two columns it walks in order as they are.
 * Exported for the tests of its plans.
 */
export function matching(query: EventQuery, limit: number, options: { ordered: boolean }): SQL {
  const keys = [...new Set(query.keys ?? [])];
  const sender = query.sender === undefined ? sql`` : sql`AND e.sender = ${query.sender}`;
  if (query.namespace === undefined && keys.length === 0) {
    return sql`SELECT ${EVENT_COLUMNS} FROM baton_events e WHERE ${offsetRange(query)} ${sender}
               ORDER BY e."offset" LIMIT ${limit}`;
  }
  if (query.namespace !== undefined && keys.length === 0) {
    return sql`SELECT ${EVENT_COLUMNS} FROM baton_events e WHERE ${namespaceRange(sql`${query.namespace}::text`, query)}
               ${sender} ORDER BY e.namespace, e."offset" LIMIT ${limit}`;
  }
  if (query.namespace !== undefined && keys.length === 1) {
    return sql`SELECT ${EVENT_COLUMNS} FROM baton_events e
               WHERE e.namespace = ${query.namespace} AND e.key = ${keys[0]} AND ${offsetRange(query)} ${sender}
               ORDER BY e.namespace, e.key, e."offset" LIMIT ${limit}`;
  }
  const namespaces =
    query.namespace === undefined
      ? sql`(WITH RECURSIVE found(namespace) AS (
               (SELECT f.namespace FROM baton_events f ORDER BY f.namespace LIMIT 1)
               UNION ALL
               SELECT (SELECT f.namespace FROM baton_events f WHERE f.namespace > found.namespace
                       ORDER BY f.namespace LIMIT 1)
               FROM found WHERE found.namespace IS NOT NULL)
             SELECT namespace FROM found WHERE namespace IS NOT NULL)`
      : sql`(SELECT ${query.namespace}::text AS namespace)`;
  return sql`
    SELECT e.* FROM ${namespaces} AS n
    CROSS JOIN unnest(${sql.param(keys)}::text[]) AS k(key)
    CROSS JOIN LATERAL (
      SELECT ${EVENT_COLUMNS} FROM baton_events e
      WHERE e.namespace = n.namespace AND e.key = k.key AND ${offsetRange(query)} ${sender}
      ORDER BY e.namespace, e.key, e."offset" LIMIT ${limit}) AS e
    ${options.ordered ? sql`ORDER BY e."offset"` : sql``} LIMIT ${limit}`;
}

/** The events of `namespace` between the query's offsets, as a range of the (namespace, offset) index. */
function namespaceRange(namespace: SQL, query: EventQuery): SQL {
  const to = sql`${String(query.to ?? LAST_POSSIBLE_OFFSET)}::bigint`;
  return sql`(e.namespace, e."offset") > (${namespace}, ${query.after ?? 0}::bigint)
             AND (e.namespace, e."offset") <= (${namespace}, ${to})`;
}

function offsetRange(query: EventQuery): SQL {
  const parts: SQL[] = [sql`true`];
  if (query.after !== undefined) parts.push(sql`e."offset" > ${query.after}`);
  if (query.to !== undefined) parts.push(sql`e."offset" <= ${query.to}`);
  return sql.join(parts, sql` AND `);
}

function toEvent(row: Row): StoredEvent {
  return {
    offset: Number(row['offset']),
    namespace: String(row['namespace']),
    key: String(row['key']),
    value: nullableText(row['value']),
    context: nullableText(row['context']),
    sender: nullableText(row['sender']),
    createTime: Number(row['create_ms']),
  };
}

function nullableText(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  return typeof value === 'string' ? value : JSON.stringify(value);
}
