// Commands on the group: `status` (members, role, term, queues) and `failover`.
import type { Command } from 'commander';

import type { CliContext } from '../context.js';
import { formatTable, queuesTable } from '../output.js';
import { queueJson } from '../../util/wire.js';

export function registerClusterCommands(program: Command, ctx: CliContext): void {
  program
    .command('status')
    .description('print the group (members, role, term, primary) and the queues')
    .option('--json', 'print as JSON')
    .action(async (options: { json?: boolean }) => {
      const { cluster, queues } = await ctx.withAdmin(async (admin) => ({
        cluster: await admin.cluster(),
        queues: await admin.queues(),
      }));
      if (options.json) {
        return ctx.printJson({
          group: cluster.group ?? null,
          elector: cluster.elector ?? null,
          primary: cluster.leader ?? null,
          term: cluster.term,
          members: cluster.members.map((m) => ({ ...m, lastSeen: m.lastSeen.toISOString() })),
          queues: queues.map(queueJson),
        });
      }
      if (!cluster.group) {
        ctx.print(`node ${cluster.node}: not in a group (it acts alone)`);
      } else {
        ctx.print(
          `group ${cluster.group} (${cluster.elector ?? '?'} elector): primary ${cluster.leader ?? 'unknown'}, term ${cluster.term}`,
        );
        const now = Date.now();
        ctx.print(
          cluster.members.length === 0
            ? 'no member is running'
            : formatTable(
                ['member', 'role', 'term', 'address', 'last seen'],
                cluster.members.map((m) => [
                  m.node,
                  m.role,
                  String(m.term),
                  m.address ?? '-',
                  `${Math.max(0, Math.round((now - m.lastSeen.getTime()) / 100) / 10)} s ago`,
                ]),
              ),
        );
      }
      ctx.print('');
      ctx.print(queuesTable(queues));
    });

  program
    .command('failover')
    .description('make the primary yield, so that another node takes over')
    .option('--to <node>', 'the node that should take over')
    .action(async (options: { to?: string }) => {
      await ctx.withAdmin((admin) => admin.failover(options.to));
      ctx.print(`failover requested${options.to ? ` (to ${options.to})` : ''}`);
    });
}
