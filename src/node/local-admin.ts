// Admin operations on an embedded store that no node is running: the CLI opens the store itself (taking
// its lock), acts, and closes it. Publishing only queues records; a node processes them when it runs.
import type { QueueConfig, ResolvedConfig } from '../config/types.js';
import { UnknownQueueError } from '../errors.js';
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
import type { Storage } from './storage.js';

export async function openLocalAdmin(config: ResolvedConfig, log: Logger): Promise<Admin> {
  const storage = await openStorage(config, log);
  return new LocalAdmin(config, storage);
}

class LocalAdmin implements Admin {
  readonly #config: ResolvedConfig;
  readonly #storage: Storage;

  constructor(config: ResolvedConfig, storage: Storage) {
    this.#config = config;
    this.#storage = storage;
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

  async migrate(): Promise<SchemaUpdate> {
    return updateSchema(this.#storage.store, this.#config, await this.#handlers());
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

  close(): Promise<void> {
    return this.#storage.close();
  }

  #known(queue: string): string {
    if (!(queue in this.#config.queues)) throw new UnknownQueueError(queue, Object.keys(this.#config.queues));
    return queue;
  }
}
