// `baton sql --json` prints the same JSON whether it opens the store itself (no node running) or goes
// through the node's HTTP API: big integers as strings, bytes as PostgreSQL's hex text.
import { afterEach, describe, expect, it } from 'vitest';

import { cleanupAll, freePort, runBaton, startBatonNode, tempProject } from '../support/process.js';

afterEach(cleanupAll);

// 2^53 + 1 does not fit a JavaScript number: the driver hands it over as a BigInt.
const STATEMENT = "select 9007199254740993::bigint as big, '\\x0102ff'::bytea as bytes, 42::int as small";
const EXPECTED = {
  columns: ['big', 'bytes', 'small'],
  rows: [{ big: '9007199254740993', bytes: '\\x0102ff', small: 42 }],
};

describe('sql --json', () => {
  it('prints big integers and bytes the same with and without a node', async () => {
    const project = await tempProject({
      toml: `[node]\ndata_dir = "data"\n\n[http]\nport = ${await freePort()}\n\n[queues.q]\nhandler = "./handler.ts"\n`,
      files: { 'handler.ts': 'export function process() {}\n' },
    });
    const sql = () => runBaton(['-c', project.configPath, 'sql', '--json', STATEMENT], { cwd: project.dir });

    // Soft: the node's answer below is checked even when this one is wrong.
    const offline = await sql();
    expect.soft(offline.stderr).toBe('');
    expect.soft(offline.code).toBe(0);
    if (offline.code === 0) expect.soft(JSON.parse(offline.stdout)).toEqual(EXPECTED);

    const node = await startBatonNode(project.configPath);
    const online = await sql();
    expect(online.stderr).toBe('');
    expect(online.code).toBe(0);
    expect(JSON.parse(online.stdout)).toEqual(EXPECTED);
    expect((await node.stop()).code).toBe(0);
  });
});
