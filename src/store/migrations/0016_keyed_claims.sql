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

-- The records of key `p_key` a claim may take, in id order, after id `p_after`, or NULL when the key holds no
-- record there: with one claim per key (p_concurrency 1), the first records as long as they are unclaimed and
-- due (a key whose head is held or waits gives none, after one look at its head); with more, the first
-- unclaimed and due ones among the key's next p_scan records, none while p_concurrency claims hold records of
-- the key already.
CREATE FUNCTION baton_key_records(p_queue text, p_key text, p_after bigint, p_want integer,
                                  p_concurrency integer, p_scan integer)
RETURNS bigint[] LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
  head_free boolean;
  holders integer;
  ids bigint[];
BEGIN
  IF p_want <= 0 THEN
    RETURN '{}';
  END IF;
  IF p_concurrency <= 1 THEN
    SELECT x.claimed_by IS NULL AND x.run_after <= now() INTO head_free FROM baton_queue_records x
    WHERE x.queue = p_queue AND x.key = p_key AND x.id > p_after ORDER BY x.id LIMIT 1;
    IF NOT FOUND THEN
      RETURN NULL;
    ELSIF NOT head_free THEN
      RETURN '{}';
    END IF;
    SELECT coalesce(array_agg(h.id ORDER BY h.id) FILTER (WHERE h.ok), '{}') INTO ids
    FROM (SELECT r.id, bool_and(r.claimed_by IS NULL AND r.run_after <= now()) OVER (ORDER BY r.id) AS ok
          FROM (SELECT x.id, x.claimed_by, x.run_after FROM baton_queue_records x
                WHERE x.queue = p_queue AND x.key = p_key AND x.id > p_after
                ORDER BY x.id LIMIT p_want) AS r) AS h;
    RETURN ids;
  END IF;
  SELECT count(*) INTO holders FROM (
    SELECT DISTINCT x.claimed_at, x.claimed_by FROM baton_queue_records x
    WHERE x.queue = p_queue AND x.key = p_key AND x.claimed_by IS NOT NULL) AS held;
  IF holders >= p_concurrency THEN
    RETURN '{}';
  END IF;
  SELECT array_agg(f.id ORDER BY f.id) INTO ids
  FROM (SELECT r.id FROM (SELECT x.id, x.claimed_by, x.run_after FROM baton_queue_records x
                          WHERE x.queue = p_queue AND x.key = p_key AND x.id > p_after
                          ORDER BY x.id LIMIT p_scan) AS r
        WHERE r.claimed_by IS NULL AND r.run_after <= now() ORDER BY r.id LIMIT p_want) AS f;
  IF ids IS NULL AND EXISTS (
      SELECT 1 FROM baton_queue_records x WHERE x.queue = p_queue AND x.key = p_key AND x.id > p_after) THEN
    RETURN '{}';
  END IF;
  RETURN ids;
END $$;

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
  walk refcursor;
  walk_key text;
  walk_tat timestamptz;
  allowed integer;
  want integer;
  got bigint[];
  picked bigint[] := '{}';
  visited text[] := '{}';
  taken integer[] := '{}';
  allowances integer[] := '{}';
  empties text[] := '{}';
  givers integer := 0;
BEGIN
  -- One key row locked at a time (an explicit FETCH takes one row): keys not reached stay free for others.
  OPEN walk FOR SELECT k.key, k.tat FROM baton_queue_keys k WHERE k.queue = p_queue
                ORDER BY k.turn LIMIT visit_cap FOR UPDATE SKIP LOCKED;
  WHILE cardinality(picked) < p_max LOOP
    FETCH walk INTO walk_key, walk_tat;
    EXIT WHEN NOT FOUND;
    allowed := p_max;
    IF p_rate IS NOT NULL THEN
      allowed := greatest(0, floor(extract(epoch FROM now() - greatest(walk_tat, now())) * p_rate
                                   + p_window_ms / 1000.0 * p_rate))::integer;
    END IF;
    want := least(share, p_max - cardinality(picked), allowed);
    got := baton_key_records(p_queue, walk_key, 0, want, p_concurrency, scan);
    IF got IS NULL THEN
      empties := empties || walk_key;
      CONTINUE;
    END IF;
    picked := picked || got;
    visited := visited || walk_key;
    taken := taken || cardinality(got);
    allowances := allowances || allowed;
    IF cardinality(got) > 0 THEN
      givers := givers + 1;
    END IF;
  END LOOP;
  CLOSE walk;
  -- A key alone with work may fill the batch: nobody else is waiting for it.
  IF givers = 1 AND cardinality(picked) < p_max THEN
    FOR i IN 1 .. cardinality(visited) LOOP
      IF taken[i] > 0 THEN
        got := coalesce(baton_key_records(p_queue, visited[i], picked[cardinality(picked)],
                                          least(p_max - cardinality(picked), allowances[i] - taken[i]),
                                          p_concurrency, scan), '{}');
        picked := picked || got;
        taken[i] := taken[i] + cardinality(got);
      END IF;
    END LOOP;
  END IF;
  -- Every key visited goes to the back, those that gave nothing too (held, waiting, throttled): idle keys
  -- at the front would otherwise fill every walk.
  UPDATE baton_queue_keys k
  SET turn = nextval('baton_queue_key_turns'),
      tat = CASE WHEN p_rate IS NULL OR v.n = 0 THEN k.tat
                 ELSE greatest(k.tat, now()) + (v.n / p_rate) * interval '1 second' END
  FROM unnest(visited, taken) AS v(key, n)
  WHERE k.queue = p_queue AND k.key = v.key;
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
