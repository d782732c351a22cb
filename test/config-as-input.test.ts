// A resolved config said as baton.toml says it (what `print-config` prints): written as TOML (or JSON) and
// read back from the same folder, it resolves to the same config, whatever sections and derived values it has.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { parse, stringify } from 'smol-toml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { configAsInput } from '../src/config/as-input.js';
import { loadConfig, resolveConfig } from '../src/config/load.js';
import type { ResolvedConfig } from '../src/config/types.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'baton-config-input-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Loads `toml` from baton.toml in the test folder, as `baton -c` would. */
async function load(toml: string, name = 'baton.toml'): Promise<ResolvedConfig> {
  const file = path.join(dir, name);
  await writeFile(file, toml);
  return loadConfig({ cwd: dir, file: name, env: {} });
}

/** Everything but where it came from, which differs between the two files. */
function withoutFile(config: ResolvedConfig): Omit<ResolvedConfig, 'file'> {
  const { file: _file, ...rest } = config;
  return rest;
}

const SERVER = `
[node]
name = "n1"
data_dir = "data"

[log]
level = "debug"
format = "json"

[http]
host = "0.0.0.0"
token = "root-token-0123456789"
hosts = ["Baton.Example.com", "[FD00::1]"]
trust_proxy = ["loopback", "10.0.0.0/8"]

[[http.tokens]]
token = "team-a-token-0123456789"
namespaces = ["team-a"]

[[http.tokens]]
token = "metrics-token-0123456789"
scopes = ["metrics"]

[store]
url = "postgres://baton@db:5432/sink"
schema = "jobs"
statement_timeout_ms = 60000
query_timeout_ms = 1000

[redis]
url = "redis://cache:6379/2"

[queues.ping]
handler = "./handlers/ping.ts"
batch_size = 100

[queues.metrics]
handler = "some-package"
backend = "redis"

[queues.orders]
handler = "./handlers/orders.ts"
backend = "postgres"
url = "postgres://baton@queues:5432/q"
migrations = "./migrations/orders"
run_on = "primary"
retry_delay_ms = 10
retry_max_delay_ms = 20

[group]
name = "g"
elector = "postgres"
lease_ms = 4000

[components.listener]
module = "./components/listener.ts"
channels = ["a", "b"]

[events]
retention_days = 7
max_batch = 500

[tasks.backup]
command = "pg_dump sink"
timeout_ms = 60000

[tasks.report]
module = "./tasks/report.ts"
namespace = "reports"

[[rules]]
on = { key = "nightly" }
action = "start"
task = "backup"

[[rules]]
on = { namespace = "reports", key = "go", value = "now" }
action = "restart"
task = "report"
on_lost = "restart"

[schedules.nightly]
cron = "0 3 * * *"
timezone = "Europe/Paris"
task = "backup"

[schedules.beat]
every = "1m30s"
missed = "all"
missed_limit = 10
jitter_ms = 500
publish = { queue = "ping", payload = "{tick}" }

[schedules.pulse]
every = "5s"
namespace = "reports"
event = { namespace = "reports", key = "pulse", value = "on" }

[workflows.etl]
namespace = "etl"
max_concurrent = 2
over_limit = "skip"
triggers = [{ on = { key = "batch.*" } }, { schedule = "pulse" }, { on = { namespace = "x", key = "go", value = "1" } }]
[workflows.etl.tasks.extract]
command = "echo extract"
on_lost = "restart"
[workflows.etl.tasks.transform]
command = "echo transform"
after = ["extract"]
[workflows.etl.tasks.load]
command = "echo load"
timeout_ms = 1000
after = ["extract", "transform"]
[workflows.etl.tasks.alert]
command = "echo alert"
[[workflows.etl.rules]]
on = { any = [{ task = "load", state = "failed" }, { key = "abort.*", value = "now" }] }
action = "restart"
task = "alert"
[[workflows.etl.rules]]
on = { all = [{ key = "a" }, { key = "b" }] }
action = "stop"
task = "load"

[workflows.coded]
module = "./coded-workflow.ts"
`;

const EMBEDDED = `
[node]
data_dir = "state"

[http]
enabled = false

[store]
path = "db"
schema = "baton_embedded"

[queues.ping]
handler = "./handlers/ping.ts"
inline = false

[group]
name = "alone"
elector = "standalone"
`;

describe('configAsInput', () => {
  for (const [name, toml] of [
    ['a server store with every section', SERVER],
    ['the embedded store, HTTP off, a standalone group', EMBEDDED],
    ['no keys at all', ''],
  ] as const) {
    it(`round-trips through TOML and JSON: ${name}`, async () => {
      const config = await load(toml);
      const input = configAsInput(config);
      const fromToml = await load(stringify(input), 'printed.toml');
      expect(withoutFile(fromToml)).toEqual(withoutFile(config));
      const fromJson = resolveConfig(JSON.parse(JSON.stringify(input)), { baseDir: dir, env: {} });
      expect(withoutFile(fromJson)).toEqual(withoutFile(config));
    });
  }

  it('writes snake_case keys, derived values and absolute paths', async () => {
    const input = parse(stringify(configAsInput(await load(SERVER)))) as Record<
      string,
      Record<string, unknown>
    >;
    expect(input['node']).toEqual({
      name: 'n1',
      data_dir: path.join(dir, 'data'),
      shutdown_timeout_ms: 10_000,
      startup_timeout_ms: 30_000,
    });
    expect(input['queues']?.['ping']).toMatchObject({
      handler: path.join(dir, 'handlers/ping.ts'),
      key: 'ping',
      concurrency: 4,
      batch_size: 100,
    });
    expect(input['group']).toMatchObject({
      url: 'postgres://baton@db:5432/sink',
      renew_deadline_ms: 2400,
      stop_timeout_ms: 1600,
    });
    expect(input['store']).toMatchObject({ query_timeout_ms: 65_000 });
    expect(input['http']?.['hosts']).toEqual(['baton.example.com', 'fd00::1']);
  });
});
