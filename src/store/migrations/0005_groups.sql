-- Groups: the fence a new primary raises before acting (in the sink, whatever the elector), the lease of the
-- postgres elector, and the members that heartbeat into the store.
CREATE TABLE baton_fence (
  group_name text PRIMARY KEY,
  term bigint NOT NULL,
  raised_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE baton_leases (
  group_name text PRIMARY KEY,
  holder text,
  term bigint NOT NULL DEFAULT 0,
  expires_at timestamptz NOT NULL DEFAULT now(),
  preferred text,
  preferred_until timestamptz
);

CREATE TABLE baton_members (
  group_name text NOT NULL,
  node text NOT NULL,
  address text,
  role text NOT NULL,
  term bigint NOT NULL DEFAULT 0,
  last_seen timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_name, node)
);
