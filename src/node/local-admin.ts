// Admin operations on an embedded store that no node is running: the CLI opens the store itself (taking
// its lock), acts, and closes it. Publishing only queues records; a node processes them when it runs.
import type { MigrationProgress } from '../store/migrate.js';
import type { QueueConfig, ResolvedConfig } from '../config/types.js';
import { UnknownQueueError } from '../errors.js';
import { EventLog } from '../events/log.js';
import type { EventTransport } from '../events/transport.js';
import { LocalEventTransport } from '../events/transport.js';
import type { Handler } from '../handler/handler.js';
import { loadHandler } from '../handler/load.js';
import { createMissingTables } from '../handler/tables.js';
import type { Logger } from '../log.js';
import type { ErrorRecord } from '../queue/backend.js';
import type { QueryResult } from '../store/store.js';
import type { Admin, QueueInfo } from './admin.js';
import type { NewMigration, SchemaUpdate } from './schema.js';
import { makeMigration, updateSchema } from './schema.js';
import { openStorage } from './storage.js';
import type { GroupStatus } from '../cluster/types.js';
import { openMembership } from '../cluster/group.js';
import { RemoteAdmin } from './remote-admin.js';
import type { Storage } from './storage.js';
import type { StopRequest, TaskRun, TaskRunQuery } from '../tasks/runs.js';
import { listTaskRuns, requestStop } from '../tasks/runs.js';

export async function openLocalAdmin(config: ResolvedConfig, log: Logger): Promise<Admin> {
  const storage = await openStorage(config, log, { consume: false });
  return new LocalAdmin(config, storage, log);
}

class LocalAdmin implements Admin {
  readonly #config: ResolvedConfig;
  readonly #storage: Storage;

  readonly #log: Logger;
  #events: EventLog | undefined;

  constructor(config: ResolvedConfig, storage: Storage, log: Logger) {
    this.#config = config;
    this.#storage = storage;
    this.#log = log;
  }

  publish(queue: string, records: readonly Buffer[]): Promise<number> {
    return this.#storage.backendFor(queue).publish(queue, records);
  }

  async queues(): Promise<QueueInfo[]> {
    return Promise.all(
      Object.keys(this.#config.queues).map(async (name) => ({
        name,
        backend: this.#storage.backendFor(name).kind,
        ...(await this.#storage.backendFor(name).stats(name)),
        processed: undefined,
        failed: undefined,
      })),
    );
  }

  listErrors(queue: string, options: { limit: number; afterId?: string }): Promise<ErrorRecord[]> {
    return this.#storage.backendFor(queue).listErrors(queue, options);
  }

  replayErrors(queue: string, options: { ids?: readonly string[]; limit: number }): Promise<number> {
    return this.#storage.backendFor(queue).replayErrors(queue, options);
  }

  dropErrors(queue: string, ids: readonly string[]): Promise<number> {
    return this.#storage.backendFor(queue).dropErrors(queue, ids);
  }

  sql(text: string, params: readonly unknown[] = []): Promise<QueryResult> {
    return this.#storage.store.query(text, params);
  }

  async initdb(): Promise<string[]> {
    return createMissingTables(this.#storage.store, await this.#handlers());
  }

  async migrate(onApplied?: MigrationProgress): Promise<SchemaUpdate> {
    const update = await updateSchema(this.#storage.store, this.#config, await this.#handlers(), onApplied);
    // Baton's own were applied when the store was opened for this command.
    return { ...update, migrated: [...this.#storage.migrated, ...update.migrated] };
  }

  async makeMigration(queue: string, message: string): Promise<NewMigration> {
    const config = this.#config.queues[this.#known(queue)] as QueueConfig;
    const handler = await loadHandler(queue, config.handler, this.#config.file);
    return makeMigration(this.#storage.store, this.#config, handler, message);
  }

  #handlers(): Promise<Handler[]> {
    return Promise.all(
      Object.values(this.#config.queues).map((queue) =>
        loadHandler(queue.name, queue.handler, this.#config.file),
      ),
    );
  }

  /** Asks a live member of the group (found in the membership) for its view. */
  async cluster(): Promise<GroupStatus> {
    const member = await this.#liveMember();
    if (!member) {
      const group = this.#config.group;
      return {
        group: group?.name,
        elector: group?.elector,
        node: this.#config.node.name,
        role: group ? 'secondary' : 'not-in-group',
        term: 0,
        leader: undefined,
        members: [],
        failovers: [],
      };
    }
    return new RemoteAdmin(member, this.#token()).cluster();
  }

  /** Asks a live member of the group to fail over (it passes the request to the primary). */
  async failover(to?: string): Promise<void> {
    const group = this.#config.group;
    if (!group) throw new Error('this config has no [group]: there is nothing to fail over');
    const member = await this.#liveMember();
    if (!member) throw new Error(`no node of group "${group.name}" answers: start one with baton run`);
    await new RemoteAdmin(member, this.#token()).failover(to);
  }

  /** The event log on the opened store (on a server store it also hears appends of running nodes). */
  async openEvents(): Promise<EventTransport> {
    if (!this.#events) {
      const events = new EventLog(this.#storage.store, this.#log);
      await events.start();
      this.#events = events;
    }
    return new LocalEventTransport(this.#events);
  }

  taskRuns(query: TaskRunQuery = {}): Promise<TaskRun[]> {
    return listTaskRuns(this.#storage.store, query);
  }

  /** Recorded in the store: the group's primary carries it out (a node started later, when none runs). */
  stopTaskRun(id: string): Promise<StopRequest> {
    return requestStop(this.#storage.store, id);
  }

  async close(): Promise<void> {
    await this.#events?.close();
    await this.#storage.close();
  }

  /** The address of a live member of the group, the primary first; undefined when none serves HTTP. */
  async #liveMember(): Promise<string | undefined> {
    const group = this.#config.group;
    if (!group) return undefined;
    const membership = await openMembership(
      group,
      this.#storage.store,
      this.#config.store.kind === 'postgres' ? this.#config.store.url : undefined,
      this.#log,
      this.#config.node.startupTimeoutMs,
    );
    try {
      const members = (await membership.list(group.leaseMs * 3)).filter((member) => member.address);
      members.sort((a, b) => Number(b.role === 'primary') - Number(a.role === 'primary'));
      return members[0]?.address;
    } finally {
      await membership.close();
    }
  }

  #token(): string | undefined {
    return this.#config.http.token ?? this.#config.http.tokens[0]?.token;
  }

  #known(queue: string): string {
    if (!(queue in this.#config.queues)) throw new UnknownQueueError(queue, Object.keys(this.#config.queues));
    return queue;
  }
}
