// Membership in the store (baton_members), for the standalone, postgres and pg-recovery electors: the same
// SQL on PGlite and PostgreSQL. Liveness is judged by the database's clock (last_seen = now()), so nodes
// with skewed clocks still agree on who was seen recently.
import { sql } from 'drizzle-orm';

import type { Row, Store } from '../store/store.js';
import type { Membership, MemberReport } from './membership.js';
import type { Member, Role } from './types.js';

const ROLES: readonly Role[] = ['primary', 'secondary', 'not-in-group'];

export class StoreMembership implements Membership {
  readonly #store: Store;
  readonly #group: string;

  /** The store is the caller's: close() leaves it open. */
  constructor(store: Store, group: string) {
    this.#store = store;
    this.#group = group;
  }

  async heartbeat(report: MemberReport): Promise<void> {
    await this.#store.execute(sql`
      INSERT INTO baton_members (group_name, node, address, role, term, last_seen)
      VALUES (${this.#group}, ${report.node}, ${report.address ?? null}, ${report.role}, ${report.term}, now())
      ON CONFLICT (group_name, node) DO UPDATE SET address = EXCLUDED.address, role = EXCLUDED.role,
        term = EXCLUDED.term, last_seen = EXCLUDED.last_seen`);
  }

  async list(withinMs: number): Promise<Member[]> {
    const rows = await this.#store.execute(sql`
      SELECT node, address, role, term, last_seen FROM baton_members
      WHERE group_name = ${this.#group} AND last_seen > now() - ${withinMs}::float8 * interval '1 millisecond'
      ORDER BY node`);
    return rows.map(toMember);
  }

  async leave(node: string): Promise<void> {
    await this.#store.execute(
      sql`DELETE FROM baton_members WHERE group_name = ${this.#group} AND node = ${node}`,
    );
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Parses a row (pg gives bigint as text and timestamptz as Date; PGlite may give numbers). */
function toMember(row: Row): Member {
  const role = ROLES.find((candidate) => candidate === row['role']);
  const lastSeen = row['last_seen'];
  return {
    node: String(row['node']),
    address: typeof row['address'] === 'string' ? row['address'] : undefined,
    // A role this version does not know (a newer node wrote it) is shown as secondary: it is not ours to act on.
    role: role ?? 'secondary',
    term: Number(row['term']),
    lastSeen: lastSeen instanceof Date ? lastSeen : new Date(String(lastSeen)),
  };
}
