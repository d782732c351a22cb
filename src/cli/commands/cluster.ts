// Commands on the group: `status` (members, role, term, queues) and `failover`.
import type { Command } from 'commander';

import type { ListenerLag } from '../../events/transport.js';
import type { Admin } from '../../admin/admin.js';
import type { CliContext } from '../context.js';
import { formatTable, queuesTable } from '../output.js';

export function registerClusterCommands(program: Command, ctx: CliContext): void {
  program
    .command('status')
    .description("print the group (members, role, term, primary), the queues and the event listeners' lag")
    .option('--json', 'print as JSON')
    .action(async (options: { json?: boolean }) => {
      const { cluster, queues, listeners } = await ctx.withAdmin(async (admin) => ({
        cluster: await admin.cluster(),
        queues: await admin.queues(),
        listeners: await listenerLags(admin),
      }));
      if (options.json) {
        const [{ clusterJson }, { queueJson }] = await Promise.all([
          import('../../cluster/wire.js'),
          import('../../queue/wire.js'),
        ]);
        return ctx.printJson({ ...clusterJson(cluster), queues: queues.map(queueJson), listeners });
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
      if (listeners.length > 0) {
        ctx.print('');
        ctx.print(
          formatTable(
            ['listener', 'namespace', 'lag (offsets)'],
            listeners.map((listener) => [listener.name, listener.namespace, String(listener.lag)]),
          ),
        );
      }
    });

  program
    .command('failover')
    .description('make the primary yield, so that another node takes over')
    .option('--to <node>', 'the node that should take over')
    .action(async (options: { to?: string }) => {
      const result = await ctx.withAdmin((admin) => admin.failover(options.to));
      ctx.print(result.message);
    });
}

/** The named event listeners and their lag; none when the event log is off or out of reach. */
async function listenerLags(admin: Admin): Promise<ListenerLag[]> {
  const events = await admin.openEvents().catch(() => undefined);
  if (!events) return [];
  try {
    return await events.listenerLags();
  } catch {
    return [];
  } finally {
    await events.close();
  }
}
