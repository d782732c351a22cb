// Log lines for people and machines: `--log-format`, `[log] format` and BATON_LOG__FORMAT choose between
// pino-pretty's lines and JSON lines (JSON when stderr is not a terminal, as here, unless told otherwise);
// and the Redis persistence advice, which is for whoever runs the node, comes from `run` only.
import { randomUUID } from 'node:crypto';

import { afterEach, describe, expect, it } from 'vitest';

import {
  cleanupAll,
  FIXTURES_DIR,
  freePort,
  runBaton,
  startBatonNode,
  tempProject,
} from '../support/process.js';

afterEach(cleanupAll);

/** Each test runs `baton` a few times, each opening PGlite: slow on a loaded machine. */
const SLOW = { timeout: 180_000 };

const PRETTY_LINE = /^\[\d\d:\d\d:\d\d\.\d{3}\] DEBUG: (opening|creating) the embedded store in /m;

async function embeddedProject(log = '') {
  return tempProject({
    toml: `[node]\ndata_dir = "data"\n${log}\n[queues.ping]\nhandler = "${FIXTURES_DIR}pings-handler.ts"\n`,
  });
}

function jsonLines(stderr: string): Array<Record<string, unknown>> {
  return stderr
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('log format', () => {
  it('--log-format pretty writes lines for people, without JSON', SLOW, async () => {
    const project = await embeddedProject();
    const result = await runBaton(['-c', project.configPath, '-v', '--log-format', 'pretty', 'queues']);
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(PRETTY_LINE);
    expect(result.stderr).toMatch(/DEBUG: embedded store open \(\d+ ms\)/);
    expect(result.stderr.split('\n').filter((line) => line.startsWith('{'))).toEqual([]);
    // Colours are for terminals that want them.
    expect(result.stderr).not.toContain('\u001b[');
  });

  it('--log-format json, and a pipe without the option, write one JSON object a line', SLOW, async () => {
    const project = await embeddedProject('[log]\nformat = "pretty"\n');
    for (const args of [['--log-format', 'json'], []]) {
      const result = await runBaton(['-c', project.configPath, '-v', ...args, 'queues'], {
        // The config says pretty; the flag wins. Without the flag, only the env can undo it.
        env: args.length === 0 ? { BATON_LOG__FORMAT: 'auto' } : {},
      });
      expect(result.code).toBe(0);
      const lines = jsonLines(result.stderr);
      expect(lines.map((line) => line['msg'])).toContainEqual(
        expect.stringMatching(/^(opening|creating) the embedded store in /),
      );
      expect(lines.find((line) => String(line['msg']).startsWith('embedded store open'))?.['ms']).toEqual(
        expect.any(Number),
      );
    }
  });

  it('[log] format chooses pretty lines too', SLOW, async () => {
    const configured = await embeddedProject('[log]\nformat = "pretty"\n');
    const fromConfig = await runBaton(['-c', configured.configPath, '-v', 'queues']);
    expect(fromConfig.code).toBe(0);
    expect(fromConfig.stderr).toMatch(PRETTY_LINE);
  });

  it('BATON_LOG__FORMAT chooses pretty lines too', SLOW, async () => {
    const plain = await embeddedProject();
    const fromEnv = await runBaton(['-c', plain.configPath, '-v', 'queues'], {
      env: { BATON_LOG__FORMAT: 'pretty' },
    });
    expect(fromEnv.code).toBe(0);
    expect(fromEnv.stderr).toMatch(PRETTY_LINE);
  });

  it('-v means debug at least: a configured trace level stays trace', SLOW, async () => {
    const levelOf = async (log: string): Promise<unknown> => {
      const project = await embeddedProject(log);
      const result = await runBaton(['-c', project.configPath, '-v', 'print-config', '--json']);
      expect(result.code).toBe(0);
      return (JSON.parse(result.stdout) as { log: { level: unknown } }).log.level;
    };
    expect(await levelOf('[log]\nlevel = "trace"\n')).toBe('trace');
    expect(await levelOf('[log]\nlevel = "warn"\n')).toBe('debug');
  });

  it('refuses a format it does not know', SLOW, async () => {
    const project = await embeddedProject();
    const result = await runBaton(['-c', project.configPath, '--log-format', 'yaml', 'queues']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('Allowed choices are auto, json, pretty');
    const configured = await embeddedProject('[log]\nformat = "yaml"\n');
    const fromConfig = await runBaton(['-c', configured.configPath, 'queues']);
    expect(fromConfig.code).toBe(2);
    expect(fromConfig.stderr).toContain('log.format');
  });
});

describe('the Redis persistence advice', () => {
  it('comes from run, not from the other commands', SLOW, async () => {
    const project = await tempProject({
      toml:
        `[node]\ndata_dir = "data"\n\n[http]\nport = ${await freePort()}\n\n` +
        `[queues.ping]\nhandler = "${FIXTURES_DIR}pings-handler.ts"\nbackend = "redis"\n` +
        `key = "baton-test-logs-${randomUUID()}"\n`,
    });
    const command = await runBaton(['-c', project.configPath, 'queues']);
    expect(command.code).toBe(0);
    expect(command.stderr).not.toContain('appendonly');

    const node = await startBatonNode(project.configPath);
    const stopped = await node.stop();
    // The test Redis may be configured for exactly-once across its crash: then run has nothing to advise.
    const advised = stopped.stderr.includes('appendonly yes and appendfsync always');
    expect(advised).toBe(!(await redisIsDurable()));
  });
});

/** Whether the test Redis runs with appendonly yes and appendfsync always. */
async function redisIsDurable(): Promise<boolean> {
  const { Redis } = await import('ioredis');
  const client = new Redis('redis://127.0.0.1:6379', { lazyConnect: true });
  try {
    await client.connect();
    const [, appendonly] = (await client.config('GET', 'appendonly')) as string[];
    const [, appendfsync] = (await client.config('GET', 'appendfsync')) as string[];
    return appendonly === 'yes' && appendfsync === 'always';
  } finally {
    client.disconnect();
  }
}
