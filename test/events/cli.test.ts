// `baton events send | list | count | listen` on the embedded store: on the store itself when no node runs,
// and through the node that owns it when one does (listen prints one JSON object per line as events come).
import { spawn } from 'node:child_process';

import { afterEach, describe, expect, it } from 'vitest';

import {
  BATON_BIN,
  cleanupAll,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';
import { until } from './support.js';

afterEach(cleanupAll);

describe('baton events', () => {
  it('sends, lists and counts on the store when no node runs', async () => {
    const project = await tempProject({ toml: { node: { data_dir: './data' } } });
    const cwd = project.dir;
    const sent = await runBaton(['events', 'send', 'greet', 'hello', '--json', '--context', '{"a":1}'], {
      cwd,
    });
    expect(sent.code, sent.stderr).toBe(0);
    expect(JSON.parse(sent.stdout)).toMatchObject({
      offset: 1,
      key: 'greet',
      value: 'hello',
      context: '{"a":1}',
    });
    const other = await runBaton(['events', 'send', 'greet', 'there', '--namespace', 'other'], { cwd });
    expect(other.stdout).toMatch(/sent "greet" to namespace "other" at offset 2/);

    const listed = await runBaton(['events', 'list', '--json'], { cwd });
    const events = (JSON.parse(listed.stdout) as { events: Array<{ offset: number; namespace: string }> })
      .events;
    expect(events.map((event) => [event.offset, event.namespace])).toEqual([
      [1, 'default'],
      [2, 'other'],
    ]);
    const table = await runBaton(['events', 'list', '--namespace', 'other'], { cwd });
    expect(table.stdout).toMatch(/offset\s+time\s+namespace\s+key/);
    expect(table.stdout).toMatch(/there/);
    expect(table.stdout).not.toMatch(/hello/);

    const count = await runBaton(['events', 'count', '--json', '--key', 'greet', '--from', '1'], { cwd });
    expect(JSON.parse(count.stdout)).toEqual({ count: 1, capped: false });

    const bad = await runBaton(['events', 'list', '--from', 'abc'], { cwd });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--from: expected an offset/);
    const badEvent = await runBaton(['events', 'send', 'k', '--context', '{nope'], { cwd });
    expect(badEvent.code).toBe(1);
    expect(badEvent.stderr).toMatch(/context: expected a JSON text/);

    // `status` shows how far each named listener is behind the head, in offsets (the event of "other" too).
    const seeded = await runBaton(
      [
        'sql',
        `INSERT INTO baton_event_listeners (namespace, name, "offset") VALUES ('default', 'reader', 0)`,
      ],
      { cwd },
    );
    expect(seeded.code, seeded.stderr).toBe(0);
    const status = await runBaton(['status'], { cwd });
    expect(status.stdout).toMatch(/listener\s+namespace\s+lag \(offsets\)/);
    expect(status.stdout).toMatch(/reader\s+default\s+2\b/);
    const statusJson = JSON.parse((await runBaton(['status', '--json'], { cwd })).stdout) as {
      listeners: unknown[];
    };
    expect(statusJson.listeners).toEqual([{ namespace: 'default', name: 'reader', lag: 2 }]);
  }, 240_000); // nine commands, each opening the embedded store: slow on a loaded machine

  it('listens through the running node, printing one JSON object per line', async () => {
    const port = await freePort();
    const project = await tempProject({
      toml: { node: { data_dir: './data' }, http: { host: '127.0.0.1', port }, log: { level: 'warn' } },
    });
    const cwd = project.dir;
    const node = await startBatonNode(project.configPath, { cwd });
    // Sent before the listener: only --from 0 shows it.
    expect((await runBaton(['events', 'send', 'job', 'early'], { cwd })).code).toBe(0);

    const listener = spawn(process.execPath, [BATON_BIN, 'events', 'listen', 'job', 'done', '--from', '0'], {
      cwd,
      env: { PATH: process.env['PATH'] ?? '', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    listener.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    listener.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    const exited = new Promise<number | null>((resolve) => listener.once('exit', (code) => resolve(code)));
    try {
      await until(() => stdout.includes('"early"'), 20_000, 'the early event');
      for (const [key, value] of [
        ['job', 'one'],
        ['skip', 'ignored'],
        ['done', 'two'],
      ] as const) {
        expect((await runBaton(['events', 'send', key, value], { cwd })).code).toBe(0);
      }
      await until(() => stdout.split('\n').filter(Boolean).length >= 3, 20_000, 'three lines');
      const lines = stdout
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { key: string; value: string; offset: number });
      expect(lines.map((line) => line.value)).toEqual(['early', 'one', 'two']);
      expect(lines.map((line) => line.key)).toEqual(['job', 'job', 'done']);

      const count = await runBaton(['events', 'count', '--json'], { cwd });
      expect(JSON.parse(count.stdout)).toEqual({ count: 4, capped: false });
      // Through the node: a count that stops at its cap says so.
      const capped = await runBaton(['events', 'count', '--cap', '3', '--url', node.url], { cwd });
      expect(capped.stdout).toContain('≥ 3');
      const listed = await runBaton(['events', 'list', '--json', '--url', node.url], { cwd });
      expect((JSON.parse(listed.stdout) as { events: unknown[] }).events).toHaveLength(4);
      // Several URLs: a dead one first, then the node; and BATON_URL when --url is not given (a task run's
      // environment), with the run and its execution in the context.
      const dead = 'http://127.0.0.1:9';
      const several = await runBaton(['events', 'send', 'multi', 'a', '--url', `${dead},${node.url}`], {
        cwd,
      });
      expect(several.code, several.stderr).toBe(0);
      const inTask = await runBaton(['events', 'send', 'from.task', '--json'], {
        cwd,
        env: { BATON_URL: node.url, BATON_NAMESPACE: 'jobs', BATON_TASK_RUN: 'r1', BATON_EXECUTION: 'e1' },
      });
      expect(inTask.code, inTask.stderr).toBe(0);
      expect(JSON.parse(inTask.stdout)).toMatchObject({
        namespace: 'jobs',
        context: JSON.stringify({ taskRun: 'r1', execution: 'e1' }),
      });
    } finally {
      listener.kill('SIGTERM');
    }
    expect(await exited, stderr).toBe(0);
  });
});
