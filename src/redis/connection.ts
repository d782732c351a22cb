// A Redis connection as Baton opens it: an ioredis client that connects only when asked, fails a command at
// once while disconnected instead of queueing it, and reconnects on its own with back-off. ioredis reports a
// lost connection on an event rather than to the commands that fail meanwhile, so the error is kept here.
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';

import { BackendUnavailableError, describeError } from '../errors.js';
import { backoffDelay } from '../util/backoff.js';
import { sleep } from '../util/sleep.js';

const RECONNECT_BACKOFF = { initialMs: 1_000, maxMs: 32_000 };

/** The ioredis options a user of the connection chooses; the rest are Baton's. */
export type RedisConnectionOptions = Pick<
  RedisOptions,
  'maxRetriesPerRequest' | 'autoResendUnfulfilledCommands' | 'socketTimeout' | 'connectTimeout'
> & {
  /** Told before each reconnection: its attempt (from 1), its delay and why the connection ended. */
  readonly onReconnect?: (attempt: number, delayMs: number, err: string) => void;
  /** Told when connected again after an error. */
  readonly onRecovered?: () => void;
};

export class RedisConnection {
  readonly client: Redis;
  /** The URL without its password, for messages. */
  readonly url: string;
  #lastError: unknown;
  #connecting: Promise<void> | undefined;
  #closed = false;

  constructor(url: string, options: RedisConnectionOptions) {
    const { onReconnect, onRecovered, ...chosen } = options;
    this.url = redactUrl(url);
    this.client = new Redis(url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      ...chosen,
      retryStrategy: (attempt) => {
        const delay = backoffDelay(attempt, RECONNECT_BACKOFF);
        onReconnect?.(attempt, delay, describeError(this.#lastError ?? 'connection closed'));
        return delay;
      },
    });
    // Errors reach callers through their commands; the client keeps reconnecting on its own.
    this.client.on('error', (error: unknown) => (this.#lastError = error));
    this.client.on('ready', () => {
      if (this.#lastError !== undefined) onRecovered?.();
      this.#lastError = undefined;
    });
  }

  /** The error that ended the connection or failed the last attempt; undefined while connected. */
  get lastError(): unknown {
    return this.#lastError;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Starts connecting, once; resolves (never rejects) when that first attempt has succeeded or failed. */
  connect(): Promise<void> {
    if (this.client.status === 'wait') this.#connecting ??= this.client.connect().catch(() => undefined);
    return this.#connecting ?? Promise.resolve();
  }

  /**
   * Connects and waits until the client is ready, retrying on its own meanwhile: BackendUnavailableError
   * when it is not within `timeoutMs` (the node's startup timeout) or the connection is closed first.
   */
  async connectWithin(timeoutMs: number): Promise<void> {
    void this.connect();
    const deadline = Date.now() + timeoutMs;
    while (this.client.status !== 'ready') {
      if (Date.now() > deadline || this.#closed) {
        throw new BackendUnavailableError('redis', `cannot reach Redis at ${this.url}`, {
          cause: this.#lastError,
        });
      }
      await sleep(50);
    }
  }

  /** Quits (when connected) and disconnects. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.client.status === 'ready') await this.client.quit().catch(() => undefined);
    this.client.disconnect();
  }
}

function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:***@');
}
