-- Keyed claims as a walk (store-keys.ts): a claim of an ordered queue goes through the keys in turn order,
-- locking one at a time, and stops once its batch is full, so that it costs its batch and the keys it visits
-- (at most a constant times the batch), whatever the backlog or the number of idle keys. It is one function,
-- so that each key's records are read by a statement of its own, after the key is locked: its snapshot sees
-- every claim of that key that committed before (a claim committed after the statement's own snapshot would
-- otherwise be missed, and its records taken twice).

-- A key's rate limit (`key_rate_limit`): the theoretical arrival time of its next record (GCRA, as
-- baton_queue_rates for a queue). NULL: the key may take a window's worth at once.
ALTER TABLE baton_queue_keys ADD COLUMN tat timestamptz;

-- The claims holding records of a key (`key_concurrency` above 1): its claimed records, by claim.
CREATE INDEX baton_queue_records_key_held ON baton_queue_records (queue, key, claimed_at, claimed_by)
  WHERE claimed_by IS NOT NULL AND key IS NOT NULL;

-- What each key of `p_keys` (locked by the claim) may give, read in one statement after the locks: per key
-- (`o`, its place in p_keys), whether it holds any record after id p_after[o] (`present`), and the ids of its
-- records a claim may take, in id order, at most p_want[o]. With one claim per key (p_concurrency 1), the
-- first records as long as they are unclaimed and due: a key whose head is held or waits gives none, after
-- one look at its head. With more, the first unclaimed and due records among the key's next p_scan, none while
-- p_concurrency claims hold records of the key (distinct claims among its claimed records). A key's records
-- are found as `(key, id) > (k, after) AND key <= k`, ordered by key and id: only the index
-- baton_queue_records_key gives that order, so that no statistics (one key holding most records) can make the
-- planner walk the primary key instead.
CREATE FUNCTION baton_key_records(p_queue text, p_keys text[], p_after bigint[], p_want integer[],
                                  p_concurrency integer, p_scan integer)
RETURNS TABLE (o bigint, present boolean, ids bigint[]) LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
  SELECT c.o, hd.id IS NOT NULL, coalesce(pre.ids, '{}')
  FROM unnest(p_keys, p_after, p_want) WITH ORDINALITY AS c(key, after, want, o)
  LEFT JOIN LATERAL (
    SELECT x.id, x.claimed_by IS NULL AND x.run_after <= now() AS free FROM baton_queue_records x
    WHERE x.queue = p_queue AND (x.key, x.id) > (c.key, c.after) AND x.key <= c.key
    ORDER BY x.key, x.id LIMIT 1) AS hd ON true
  LEFT JOIN LATERAL (
    SELECT array_agg(h.id ORDER BY h.id) AS ids
    FROM (SELECT r.id, bool_and(r.free) OVER (ORDER BY r.id) AS ok
          FROM (SELECT x.id, x.claimed_by IS NULL AND x.run_after <= now() AS free FROM baton_queue_records x
                WHERE hd.free AND c.want > 0 AND x.queue = p_queue AND (x.key, x.id) > (c.key, c.after)
                  AND x.key <= c.key
                ORDER BY x.key, x.id LIMIT c.want) AS r) AS h
    WHERE h.ok) AS pre ON true
  WHERE p_concurrency <= 1
  UNION ALL
  SELECT c.o, hd.id IS NOT NULL, coalesce(fr.ids, '{}')
  FROM unnest(p_keys, p_after, p_want) WITH ORDINALITY AS c(key, after, want, o)
  LEFT JOIN LATERAL (
    SELECT x.id FROM baton_queue_records x
    WHERE x.queue = p_queue AND (x.key, x.id) > (c.key, c.after) AND x.key <= c.key
    ORDER BY x.key, x.id LIMIT 1) AS hd ON true
  LEFT JOIN LATERAL (
    SELECT count(*) AS n FROM (
      SELECT DISTINCT x.claimed_at, x.claimed_by FROM baton_queue_records x
      WHERE hd.id IS NOT NULL AND c.want > 0 AND x.queue = p_queue AND x.key = c.key
        AND x.claimed_by IS NOT NULL) AS d) AS held ON true
  LEFT JOIN LATERAL (
    SELECT array_agg(f.id ORDER BY f.id) AS ids
    FROM (SELECT r.id FROM (SELECT x.id, x.claimed_by, x.run_after FROM baton_queue_records x
                            WHERE held.n < p_concurrency AND hd.id IS NOT NULL AND c.want > 0
                              AND x.queue = p_queue AND (x.key, x.id) > (c.key, c.after) AND x.key <= c.key
                            ORDER BY x.key, x.id LIMIT p_scan) AS r
          WHERE r.claimed_by IS NULL AND r.run_after <= now() ORDER BY r.id LIMIT c.want) AS f) AS fr ON true
  WHERE p_concurrency > 1
$$;

-- The claim of up to p_max records of an ordered queue (see store-keys.ts for the rules). Returns the claimed
-- rows (`empty` false) and one row per key it found without records (`empty` true): removeEmptyKeys()
-- deletes those. p_batch: the batch id written on the rows (a ledger), or NULL; p_rate: records per second
-- per key, or NULL; p_window_ms: the rate's burst window; p_recovered: the reason of a recovered claim, whose
-- records come back `orphaned` (without a ledger).
CREATE FUNCTION baton_claim_keyed(p_queue text, p_consumer text, p_max integer, p_batch text,
                                  p_concurrency integer, p_rate float8, p_window_ms float8, p_recovered text)
RETURNS TABLE (id text, payload bytea, attempts integer, enqueued_at timestamptz, key text,
               orphaned boolean, empty boolean)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
  -- At most half a batch from one key while others give records; the keys visited, at most a few batches' worth.
  share integer := greatest(1, ceil(p_max / 2.0)::integer);
  visit_cap integer := 2 * p_max + 8;
  scan integer := p_max * greatest(1, p_concurrency) + p_max;
  turn_limit bigint;
  walk refcursor;
  walk_key text;
  walk_tat timestamptz;
  fetched integer := 0;
  given integer := 0;
  size integer;
  need integer;
  chunk text[];
  wants integer[];
  got bigint[];
  found_row record;
  picked bigint[] := '{}';
  visited text[] := '{}';
  taken integer[] := '{}';
  turns bigint[];
  allowances integer[] := '{}';
  chunk_allowances integer[];
  empties text[] := '{}';
  givers integer := 0;
BEGIN
  -- The keys are locked as they are fetched (an explicit FETCH takes one row), a few at a time: as many as
  -- the batch still needs at the records per key seen so far (growing at most fourfold a round). Keys not
  -- reached stay free for other claims.
  -- A key whose turn is past the sequence's value at the start was moved to the back meanwhile (served by a
  -- claim that committed since): locking it would follow it to its new version, and the walk would read it
  -- again in its old place. The condition, checked again on that version, skips it.
  SELECT s.last_value INTO turn_limit FROM baton_queue_key_turns s;
  OPEN walk FOR SELECT k.key, k.tat FROM baton_queue_keys k WHERE k.queue = p_queue AND k.turn <= turn_limit
                ORDER BY k.turn LIMIT visit_cap FOR UPDATE SKIP LOCKED;
  LOOP
    need := p_max - cardinality(picked);
    EXIT WHEN need <= 0 OR fetched >= visit_cap;
    -- Records per key: what the keys that gave gave on average, half a batch before any did.
    size := ceil(need / CASE WHEN givers = 0 THEN share ELSE greatest(1.0, given::float8 / givers) END)::integer;
    size := least(size, 4 * fetched + ceil(need / share::float8)::integer, visit_cap - fetched);
    chunk := '{}';
    wants := '{}';
    chunk_allowances := '{}';
    FOR i IN 1 .. size LOOP
      FETCH walk INTO walk_key, walk_tat;
      EXIT WHEN NOT FOUND;
      chunk := chunk || walk_key;
      chunk_allowances := chunk_allowances || CASE WHEN p_rate IS NULL THEN p_max ELSE
        greatest(0, floor((extract(epoch FROM now() - greatest(walk_tat, now())) + p_window_ms / 1000.0)
                          * p_rate))::integer END;
      wants := wants || least(share, need, chunk_allowances[cardinality(chunk_allowances)]);
    END LOOP;
    EXIT WHEN cardinality(chunk) = 0;
    fetched := fetched + cardinality(chunk);
    FOR found_row IN
      SELECT f.o, f.present, f.ids FROM baton_key_records(p_queue, chunk, array_fill(0::bigint, ARRAY[cardinality(chunk)]),
                                                          wants, p_concurrency, scan) AS f ORDER BY f.o
    LOOP
      IF NOT found_row.present THEN
        empties := empties || chunk[found_row.o];
        CONTINUE;
      END IF;
      -- A key not reached once the batch is full keeps its turn.
      CONTINUE WHEN cardinality(picked) >= p_max;
      got := found_row.ids[1:p_max - cardinality(picked)];
      picked := picked || got;
      given := given + cardinality(got);
      visited := visited || chunk[found_row.o];
      taken := taken || cardinality(got);
      allowances := allowances || chunk_allowances[found_row.o];
      IF cardinality(got) > 0 THEN
        givers := givers + 1;
      END IF;
    END LOOP;
    EXIT WHEN cardinality(chunk) < size;
  END LOOP;
  CLOSE walk;
  -- A key alone with work may fill the batch: nobody else is waiting for it.
  IF givers = 1 AND cardinality(picked) < p_max THEN
    FOR i IN 1 .. cardinality(visited) LOOP
      IF taken[i] > 0 THEN
        SELECT f.ids INTO got FROM baton_key_records(p_queue, ARRAY[visited[i]], ARRAY[picked[cardinality(picked)]],
                                                     ARRAY[least(p_max - cardinality(picked), allowances[i] - taken[i])],
                                                     p_concurrency, scan) AS f;
        picked := picked || got;
        taken[i] := taken[i] + cardinality(got);
      END IF;
    END LOOP;
  END IF;
  -- Every key visited goes to the back, in the order visited, those that gave nothing too (held, waiting,
  -- throttled): idle keys at the front would otherwise fill every walk.
  -- (The rows are found by the primary key, whatever the statistics; each finds its values by its place.)
  SELECT coalesce(array_agg(nextval('baton_queue_key_turns') ORDER BY u.o), '{}') INTO turns
  FROM unnest(visited) WITH ORDINALITY AS u(key, o);
  UPDATE baton_queue_keys k
  SET turn = turns[array_position(visited, k.key)],
      tat = CASE WHEN p_rate IS NULL OR taken[array_position(visited, k.key)] = 0 THEN k.tat
                 ELSE greatest(k.tat, now()) + (taken[array_position(visited, k.key)] / p_rate) * interval '1 second' END
  WHERE k.queue = p_queue AND k.key = ANY(visited);
  RETURN QUERY
    WITH loose AS (
      SELECT x.id FROM baton_queue_records x
      WHERE x.queue = p_queue AND x.claimed_by IS NULL AND x.key IS NULL AND x.run_after <= now()
      ORDER BY x.run_after, x.id LIMIT greatest(0, p_max - cardinality(picked))
      FOR UPDATE SKIP LOCKED),
    claimed AS (
      UPDATE baton_queue_records r
      SET claimed_by = p_consumer, claimed_at = now(), batch_id = coalesce(p_batch, r.batch_id)
      WHERE r.id = ANY(picked || ARRAY(SELECT l.id FROM loose l)) AND r.claimed_by IS NULL
      RETURNING r.id::text AS id, r.payload, r.attempts, r.enqueued_at, r.key,
                (p_batch IS NULL AND r.last_error IS NOT DISTINCT FROM p_recovered) AS orphaned, false AS empty)
    SELECT * FROM claimed
    UNION ALL
    SELECT NULL::text, NULL::bytea, NULL::integer, NULL::timestamptz, e.key, false, true
    FROM unnest(empties) AS e(key);
END $$;
