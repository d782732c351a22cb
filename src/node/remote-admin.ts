// Admin operations through the HTTP API of a running node (the CLI's path while a node owns the store, or to reach a group).
import { UnknownQueueError } from '../errors.js';
import { HttpEventTransport } from '../events/http-transport.js';
import type { EventTransport } from '../events/transport.js';
import type { Admin, QueueInfo } from './admin.js';
import type { ErrorRecord } from '../queue/backend.js';
import type { Role } from '../cluster/types.js';
import type { GroupStatus } from '../cluster/types.js';
import type { NewMigration, SchemaUpdate } from './schema.js';
import type { QueryResult, Row } from '../store/store.js';
import type { StopRequest, TaskRun, TaskRunQuery } from '../tasks/runs.js';
import { UnknownTaskRunError } from '../tasks/runs.js';
import { taskRunFromJson } from '../tasks/wire.js';

export class RemoteAdmin implements Admin {
  readonly #base: string;
  readonly #token: string | undefined;

  constructor(base: string, token: string | undefined) {
    this.#base = base;
    this.#token = token;
  }

  async publish(queue: string, records: readonly Buffer[]): Promise<number> {
    const single = records.length === 1 && records[0] !== undefined;
    const body = single
      ? records[0]
      : Buffer.concat(records.flatMap((record) => [record, Buffer.from('\n')]));
    const reply = await this.#request('POST', `/v1/queues/${encodeURIComponent(queue)}/records`, {
      body,
      contentType: single ? 'application/octet-stream' : 'application/x-ndjson',
    });
    return Number(reply['accepted']);
  }

  async queues(): Promise<QueueInfo[]> {
    const reply = await this.#request('GET', '/v1/queues');
    return asArray(reply['queues']).map((queue) => ({
      name: String(queue['name']),
      backend: queue['backend'] === 'redis' || queue['backend'] === 'postgres' ? queue['backend'] : 'store',
      depth: Number(queue['depth']),
      inFlight: Number(queue['in_flight']),
      processed: queue['processed'] === null ? undefined : Number(queue['processed']),
      failed: queue['failed'] === null ? undefined : Number(queue['failed']),
      errors: Number(queue['errors']),
    }));
  }

  async listErrors(queue: string, options: { limit: number; afterId?: string }): Promise<ErrorRecord[]> {
    const query = new URLSearchParams({
      limit: String(options.limit),
      ...(options.afterId ? { after: options.afterId } : {}),
    });
    const reply = await this.#request(
      'GET',
      `/v1/queues/${encodeURIComponent(queue)}/errors?${query.toString()}`,
    );
    return asArray(reply['errors']).map((error) => ({
      id: String(error['id']),
      queue,
      payload: Buffer.from(String(error['payload_base64']), 'base64'),
      attempts: Number(error['attempts']),
      error: String(error['error']),
      failedAt: new Date(String(error['failed_at'])),
      enqueuedAt: new Date(String(error['enqueued_at'])),
    }));
  }

  async replayErrors(queue: string, options: { ids?: readonly string[]; limit: number }): Promise<number> {
    const reply = await this.#request('POST', `/v1/queues/${encodeURIComponent(queue)}/errors/replay`, {
      json: { limit: options.limit, ...(options.ids ? { ids: options.ids } : {}) },
    });
    return Number(reply['replayed']);
  }

  async dropErrors(queue: string, ids: readonly string[]): Promise<number> {
    let dropped = 0;
    for (const id of ids) {
      const path = `/v1/queues/${encodeURIComponent(queue)}/errors/${encodeURIComponent(id)}`;
      const reply = await this.#request('DELETE', path, { allowNotFound: true });
      dropped += Number(reply['dropped'] ?? 0);
    }
    return dropped;
  }

  async sql(text: string, params: readonly unknown[] = []): Promise<QueryResult> {
    const reply = await this.#request('POST', '/v1/sql', { json: { sql: text, params } });
    return { columns: asArray(reply['columns']).map(String), rows: asArray(reply['rows']) };
  }

  async initdb(): Promise<string[]> {
    const reply = await this.#request('POST', '/v1/initdb', { json: {} });
    return asArray(reply['created']).map(String);
  }

  async migrate(): Promise<SchemaUpdate> {
    const reply = await this.#request('POST', '/v1/migrate', { json: {} });
    return {
      migrated: asArray(reply['migrated']).map(String),
      created: asArray(reply['created']).map(String),
    };
  }

  async makeMigration(queue: string, message: string): Promise<NewMigration> {
    const reply = await this.#request('POST', `/v1/queues/${encodeURIComponent(queue)}/migrations`, {
      json: { message },
    });
    return {
      path: typeof reply['path'] === 'string' ? reply['path'] : undefined,
      statements: asArray(reply['statements']).map(String),
    };
  }

  async cluster(): Promise<GroupStatus> {
    const reply = await this.#request('GET', '/v1/cluster');
    const text = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
    const role = (value: unknown): Role =>
      value === 'primary' || value === 'secondary' ? value : 'not-in-group';
    return {
      group: text(reply['group']),
      elector: text(reply['elector']),
      node: String(reply['node']),
      role: role(reply['role']),
      term: Number(reply['term']),
      leader: text(reply['primary']),
      members: asArray(reply['members']).map((member) => ({
        node: String(member['node']),
        address: text(member['address']),
        role: role(member['role']),
        term: Number(member['term']),
        lastSeen: new Date(String(member['last_seen'])),
      })),
      failovers: asArray(reply['failovers']).map((failover) => ({
        at: new Date(String(failover['at'])),
        term: Number(failover['term']),
        leader: text(failover['primary']),
        cause: String(failover['cause']),
      })),
    };
  }

  async failover(to?: string): Promise<void> {
    await this.#request('POST', '/v1/cluster/failover', { json: to === undefined ? {} : { to } });
  }

  openEvents(): Promise<EventTransport> {
    return Promise.resolve(new HttpEventTransport(this.#base, this.#token));
  }

  async taskRuns(query: TaskRunQuery = {}): Promise<TaskRun[]> {
    const search = new URLSearchParams();
    if (query.limit !== undefined) search.set('limit', String(query.limit));
    if (query.state !== undefined) search.set('state', query.state);
    if (query.task !== undefined) search.set('task', query.task);
    const reply = await this.#request('GET', `/v1/tasks?${search.toString()}`);
    return asArray(reply['runs']).map(taskRunFromJson);
  }

  async stopTaskRun(id: string): Promise<StopRequest> {
    const reply = await this.#request('POST', `/v1/tasks/runs/${encodeURIComponent(id)}/stop`, { json: {} });
    const run = reply['run'];
    if (typeof run !== 'object' || run === null) throw new UnknownTaskRunError(id);
    return { run: taskRunFromJson(run as Row), requested: reply['requested'] === true };
  }

  async close(): Promise<void> {}

  async #request(
    method: string,
    path: string,
    options: {
      json?: unknown;
      body?: Buffer | undefined;
      contentType?: string;
      allowNotFound?: boolean;
    } = {},
  ): Promise<Row> {
    const headers: Record<string, string> = {};
    if (this.#token) headers['authorization'] = `Bearer ${this.#token}`;
    let body: string | Buffer | undefined;
    if (options.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.json);
    } else if (options.body) {
      headers['content-type'] = options.contentType ?? 'application/octet-stream';
      body = options.body;
    }
    const response = await fetch(this.#base + path, {
      method,
      headers,
      ...(body !== undefined ? { body } : {}),
    });
    const reply = (await response.json().catch(() => ({}))) as Row;
    if (response.ok || (options.allowNotFound && response.status === 404 && reply['code'] === 'NOT_FOUND')) {
      return reply;
    }
    if (reply['code'] === 'UNKNOWN_QUEUE') {
      const queue = decodeURIComponent(path.split('/')[3] ?? '');
      throw new UnknownQueueError(queue, asArray(reply['queues']).map(String));
    }
    const message = typeof reply['error'] === 'string' ? reply['error'] : response.statusText;
    throw new Error(`the node at ${this.#base} answered ${response.status}: ${message}`);
  }
}

function asArray(value: unknown): Row[] {
  return Array.isArray(value) ? (value as Row[]) : [];
}
