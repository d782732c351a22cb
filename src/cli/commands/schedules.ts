// Commands on schedules: `schedules` lists them (spec, last tick, next tick, lag, missed) and
// `schedules fire <name>` applies one tick now on the primary, recorded like any tick. Both go through a
// running node when one answers (the owner of the embedded store, or a live member of the group).
import type { Command } from 'commander';

import type { ScheduleStatus } from '../../schedules/status.js';
import type { CliContext } from '../context.js';
import { formatTable } from '../output.js';

export function registerScheduleCommands(program: Command, ctx: CliContext): void {
  const schedules = program
    .command('schedules')
    .description('list schedules: spec, action, last tick (term), next tick, lag and missed ticks')
    .option('--json', 'print as JSON')
    .action(async (options: { json?: boolean }) => {
      const listed = await ctx.withAdmin((admin) => admin.schedules());
      if (options.json) {
        const { scheduleJson } = await import('../../schedules/wire.js');
        return ctx.printJson({ schedules: listed.map(scheduleJson) });
      }
      ctx.print(listed.length === 0 ? 'no schedule' : schedulesTable(listed));
    });

  schedules
    .command('fire')
    .description('apply one tick of a schedule now (on the primary), recorded like any tick')
    .argument('<name>', 'the schedule')
    .action(async (name: string) => {
      const fired = await ctx.withAdmin((admin) => admin.fireSchedule(name));
      const time = new Date(fired.tick).toISOString();
      ctx.print(
        fired.applied
          ? `schedule ${fired.schedule}: tick ${time} applied (term ${fired.term})`
          : `schedule ${fired.schedule}: tick ${time} was applied already`,
      );
    });
}

function schedulesTable(listed: readonly ScheduleStatus[]): string {
  const iso = (ms: number | undefined): string => (ms === undefined ? '-' : new Date(ms).toISOString());
  return formatTable(
    ['schedule', 'spec', 'action', 'last tick', 'term', 'next tick', 'lag', 'missed'],
    listed.map((schedule) => [
      schedule.name,
      schedule.configured ? (schedule.spec ?? '-') : 'removed from the config',
      schedule.action ?? '-',
      iso(schedule.last?.tick),
      schedule.last ? String(schedule.last.term) : '-',
      iso(schedule.next),
      `${schedule.lagMs} ms`,
      String(schedule.missed),
    ]),
  );
}
