// The group on the wire (GET /v1/cluster, the dashboard, `baton status --json`), in both directions:
// clusterJson writes what a node answers, clusterReply reads it back on the client's side.
import { z } from 'zod';

import type { GroupStatus, Member } from './types.js';

export function clusterJson(status: GroupStatus): Record<string, unknown> {
  return {
    group: status.group ?? null,
    elector: status.elector ?? null,
    node: status.node,
    role: status.role,
    term: status.term,
    primary: status.leader ?? null,
    members: status.members.map(memberJson),
    ...(status.membersProblem === undefined ? {} : { members_problem: status.membersProblem }),
    failovers: status.failovers.map((failover) => ({
      at: failover.at.toISOString(),
      term: failover.term,
      primary: failover.leader ?? null,
      cause: failover.cause,
    })),
  };
}

function memberJson(member: Member): Record<string, unknown> {
  return {
    node: member.node,
    address: member.address ?? null,
    role: member.role,
    term: member.term,
    last_seen: member.lastSeen.toISOString(),
  };
}

const role = z.enum(['primary', 'secondary', 'not-in-group']);
const optionalText = z
  .string()
  .nullable()
  .transform((value) => value ?? undefined);
const time = z.iso.datetime().transform((value) => new Date(value));

export const clusterReply = z
  .object({
    group: optionalText,
    elector: optionalText,
    node: z.string(),
    role,
    term: z.number(),
    primary: optionalText,
    members: z.array(
      z.object({ node: z.string(), address: optionalText, role, term: z.number(), last_seen: time }),
    ),
    members_problem: z.string().optional(),
    failovers: z.array(z.object({ at: time, term: z.number(), primary: optionalText, cause: z.string() })),
  })
  .transform((reply): GroupStatus => ({
    group: reply.group,
    elector: reply.elector,
    node: reply.node,
    role: reply.role,
    term: reply.term,
    leader: reply.primary,
    members: reply.members.map((member) => ({
      node: member.node,
      address: member.address,
      role: member.role,
      term: member.term,
      lastSeen: member.last_seen,
    })),
    ...(reply.members_problem === undefined ? {} : { membersProblem: reply.members_problem }),
    failovers: reply.failovers.map((failover) => ({
      at: failover.at,
      term: failover.term,
      leader: failover.primary,
      cause: failover.cause,
    })),
  }));
