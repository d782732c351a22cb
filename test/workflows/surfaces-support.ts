// The project of the workflow surface tests: a node on the embedded store with tokens (admin, one limited to
// namespace etl, a reader, a metrics scraper) and three small workflows of command tasks. `etl` declares its
// tasks out of DAG order (report, load, extract), so that the DAG's order is its own; `slow` runs one task
// for a minute and skips a start while it runs; `broken` fails.
import { afterAll, beforeAll } from 'vitest';

import { loadConfig } from '../../src/config/load.js';
import type { BatonNode } from '../../src/index.js';
import { startNode } from '../../src/index.js';
import { createLogger } from '../../src/log.js';
import type { TempProject } from '../support/process.js';
import { tempProject } from '../support/process.js';

export const ADMIN = 'admin-token-0123456789';
export const TEAM = 'team-etl-token-0123456789';
export const READER = 'reader-token-0123456789';
export const SCRAPER = 'metrics-token-0123456789';

export const WORKFLOWS_TOML = `
[node]
name = "wf-node"
data_dir = "data"
shutdown_timeout_ms = 3000
[log]
level = "silent"
[http]
port = 0
token = "${ADMIN}"
[[http.tokens]]
token = "${TEAM}"
namespaces = ["etl"]
[[http.tokens]]
token = "${READER}"
scopes = ["read"]
[[http.tokens]]
token = "${SCRAPER}"
scopes = ["metrics"]

[workflows.etl]
namespace = "etl"
triggers = [{ on = { key = "batch.*" } }]
[workflows.etl.tasks.report]
command = "echo report"
[workflows.etl.tasks.load]
command = "echo load"
after = ["extract"]
on_lost = "restart"
[workflows.etl.tasks.extract]
command = "echo extract"
[[workflows.etl.rules]]
on = { task = "load", state = "succeeded" }
action = "start"
task = "report"
[[workflows.etl.rules]]
on = { all = [{ key = "halt.*" }, { key = "really", value = "yes" }] }
action = "stop"
task = "report"

[workflows.slow]
namespace = "ops"
max_concurrent = 1
over_limit = "skip"
[workflows.slow.tasks.wait]
command = "sleep 60"

[workflows.broken]
namespace = "etl"
[workflows.broken.tasks.fail]
command = "echo oops >&2; exit 3"
`;

export interface WorkflowsNode {
  readonly project: TempProject;
  readonly node: BatonNode;
  /** The node's base URL. */
  readonly url: string;
}

/**
 * Starts the node before the file's tests and stops it after them; the returned function gives it (once
 * started).
 */
export function useWorkflowsNode(): () => WorkflowsNode {
  let started: WorkflowsNode | undefined;
  beforeAll(async () => {
    started = await startWorkflowsNode();
  });
  afterAll(async () => {
    await started?.node.stop();
    await started?.project.cleanup();
  });
  return () => {
    if (!started) throw new Error('the workflows node has not started');
    return started;
  };
}

async function startWorkflowsNode(): Promise<WorkflowsNode> {
  const project = await tempProject({ toml: WORKFLOWS_TOML });
  const config = await loadConfig({ file: project.configPath, cwd: project.dir, env: {} });
  const node = await startNode(config, {
    log: createLogger({ level: (process.env['TEST_LOG'] as 'info' | undefined) ?? 'silent' }),
  });
  return { project, node, url: node.address ?? '' };
}

/** A request with a bearer token; a POST sends `body` (default {}) as JSON. */
export function call(
  url: string,
  token: string,
  method: string,
  path: string,
  body: unknown = {},
): Promise<Response> {
  const post = method === 'POST';
  return fetch(`${url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(post ? { 'content-type': 'application/json' } : {}),
    },
    ...(post ? { body: JSON.stringify(body) } : {}),
  });
}
