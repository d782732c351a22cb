-- The table of the queue "orders", as handlers/orders.ts declares it. `baton migrate` (or the node, at start)
-- applies the migrations of this folder in order, once each.
CREATE TABLE IF NOT EXISTS "orders" (
	"id" text PRIMARY KEY NOT NULL,
	"customer" text NOT NULL,
	"total_cents" integer NOT NULL,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL
);
