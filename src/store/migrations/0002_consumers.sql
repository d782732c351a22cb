-- Consumers that hold claims, with their last heartbeat: claims of a consumer not seen for a while are
-- recovered by the other nodes.
CREATE TABLE baton_consumers (
  id text PRIMARY KEY,
  node text NOT NULL,
  last_seen timestamptz NOT NULL DEFAULT now()
);
