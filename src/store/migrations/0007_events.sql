-- The event log. Offsets are handed out under the lock of the single `baton_event_head` row and the lock is
-- held until the appending transaction commits, so offsets commit in order: once offset N is visible, every
-- offset below N that will ever exist is visible too, and a listener reading "offset > last seen" skips none.
-- `create_time` never goes backwards with the offset (it is the later of the clock and the previous event's).
CREATE TABLE baton_event_head (
  id smallint PRIMARY KEY CHECK (id = 1),
  last_offset bigint NOT NULL,
  last_time timestamptz NOT NULL
);

INSERT INTO baton_event_head (id, last_offset, last_time) VALUES (1, 0, '-infinity');

CREATE TABLE baton_events (
  "offset" bigint PRIMARY KEY,
  namespace text NOT NULL,
  key text NOT NULL,
  value text,
  context text,
  sender text,
  create_time timestamptz NOT NULL,
  -- Idempotent producers: a client id and its sequence number; a second send of the same pair is ignored.
  client_id text,
  client_seq bigint
);

CREATE UNIQUE INDEX baton_events_client ON baton_events (client_id, client_seq) WHERE client_id IS NOT NULL;
CREATE INDEX baton_events_namespace_key ON baton_events (namespace, key, "offset");
CREATE INDEX baton_events_create_time ON baton_events (create_time);

-- Offsets of named listeners, each committed after (or with) the effects of the events it covers.
CREATE TABLE baton_event_listeners (
  namespace text NOT NULL,
  name text NOT NULL,
  "offset" bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (namespace, name)
);
