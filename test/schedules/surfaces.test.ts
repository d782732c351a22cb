// Schedules as an operator sees them, on one node process of the embedded store: `baton schedules`, `baton
// schedules fire`, GET /v1/schedules, the metrics, the event and task actions, and a schedule removed from
// the config that stops firing while its history stays listed.
import { afterEach, describe, expect, it } from 'vitest';

import { waitFor } from '../support/group.js';
import {
  cleanupAll,
  freePort,
  runBaton,
  sqlOverHttp,
  startBatonNode,
  tempProject,
} from '../support/process.js';

afterEach(cleanupAll);

interface Listed {
  name: string;
  configured: boolean;
  spec: string | null;
  action: string | null;
  last_tick: { tick: string; term: number; cause: string } | null;
  next_tick: string | null;
  lag_ms: number;
  missed: number;
}

const SCHEDULES =
  `[tasks.report]\ncommand = "true"\n` +
  `[schedules.beat]\nevery = "1s"\nevent = { key = "beat" }\n` +
  `[schedules.nightly]\ncron = "0 3 * * *"\ntimezone = "Europe/Paris"\ntask = "report"\n`;

describe('schedules on a node process', () => {
  it('lists, fires, counts in /metrics, and keeps the history of a removed schedule', async () => {
    const port = await freePort();
    const project = await tempProject({
      toml: `[node]\nname = "solo"\ndata_dir = "data"\n[log]\nlevel = "warn"\n[http]\nport = ${port}\n${SCHEDULES}`,
    });
    const node = await startBatonNode(project.configPath);
    const list = async (): Promise<Listed[]> => {
      const result = await runBaton(['-c', project.configPath, 'schedules', '--json']);
      expect(result.stderr).toBe('');
      return (JSON.parse(result.stdout) as { schedules: Listed[] }).schedules;
    };

    // The 1-second schedule ticks; its event carries the tick time and the term (0: not in a group).
    const beat = await waitFor(
      async () => (await list()).find((entry) => entry.name === 'beat' && entry.last_tick !== null),
      20_000,
      'a tick of beat',
    );
    expect(beat).toMatchObject({
      configured: true,
      spec: 'every 1s',
      action: 'event default/beat',
      missed: 0,
    });
    expect(Date.parse(beat.next_tick ?? '') % 1_000).toBe(0);
    const events = await fetch(`${node.url}/v1/events?keys=beat`).then(
      (response) => response.json() as Promise<{ events: Array<{ value: string; context: string }> }>,
    );
    const first = events.events[0];
    expect(JSON.parse(first?.context ?? '{}')).toMatchObject({
      schedule: 'beat',
      tick: first?.value,
      term: 0,
    });

    // `schedules fire` applies one tick of the nightly schedule now: a task run, recorded as manual.
    const fired = await runBaton(['-c', project.configPath, 'schedules', 'fire', 'nightly']);
    expect(fired.stderr).toBe('');
    expect(fired.stdout).toMatch(/schedule nightly: tick .* applied \(term 0\)/);
    const runs = await sqlOverHttp(
      node.url,
      "SELECT task, rule, trigger_key FROM baton_task_runs WHERE task = 'report'",
    );
    expect(runs).toEqual([{ task: 'report', rule: -1, trigger_key: 'schedule.nightly.fired' }]);
    const nightly = (await list()).find((entry) => entry.name === 'nightly');
    expect(nightly?.last_tick?.cause).toBe('manual');
    expect(nightly?.spec).toBe('cron 0 3 * * * (Europe/Paris)');
    const unknown = await runBaton(['-c', project.configPath, 'schedules', 'fire', 'nope']);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/unknown schedule "nope"/);

    const viaHttp = await fetch(`${node.url}/v1/schedules`).then(
      (response) => response.json() as Promise<{ schedules: Listed[] }>,
    );
    expect(viaHttp.schedules.map((entry) => entry.name)).toEqual(['beat', 'nightly']);
    const metrics = await fetch(`${node.url}/metrics`).then((response) => response.text());
    expect(metrics).toMatch(/baton_schedule_tick_lateness_seconds_count\{[^}]*schedule="beat"[^}]*\} [1-9]/);

    // Without beat in the config, it no longer fires and its ticks stay listed.
    await node.stop();
    await project.write(
      'baton.toml',
      `[node]\nname = "solo"\ndata_dir = "data"\n[log]\nlevel = "warn"\n[http]\nport = ${port}\n` +
        `[tasks.report]\ncommand = "true"\n[schedules.nightly]\ncron = "0 3 * * *"\ntask = "report"\n` +
        `[schedules.marker]\nevery = "1s"\nevent = { key = "marker" }\n`,
    );
    const again = await startBatonNode(project.configPath);
    const removed = (await list()).find((entry) => entry.name === 'beat');
    expect(removed).toMatchObject({ configured: false, spec: null, next_tick: null });
    const count = async () =>
      Number(
        (
          await sqlOverHttp(
            again.url,
            "SELECT count(*) AS n FROM baton_schedule_ticks WHERE schedule = 'beat'",
          )
        )[0]?.['n'],
      );
    const before = await count();
    expect(before).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(await count()).toBe(before);
  }, 120_000);
});
