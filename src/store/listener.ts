// The one LISTEN connection of a PostgreSQL store, shared by all its listeners (queue wake-ups, the event
// log, LISTEN/NOTIFY processors): a store holds at most pool_size + 1 server connections, however many
// channels it listens on. It reconnects with back-off; after each (re)connection every listener is told,
// since notifications sent while disconnected are lost.
import pg from 'pg';

import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { backoffDelay } from '../util/backoff.js';
import { sleep } from '../util/sleep.js';
import { isReadOnlyError } from './read-only.js';
import type { Notification } from './store.js';

interface Subscriber {
  readonly channel: string;
  readonly onNotification: (notification: Notification) => void;
  readonly onConnect: () => void;
  readonly onDisconnect: (() => void) | undefined;
}

/** How often LISTEN is tried again on a standby in recovery, which refuses it until it is promoted. */
const STANDBY_RETRY_MS = 1_000;
/** How long stopping the LISTEN connection waits for it to close. */
const STOP_WAIT_MS = 2_000;

export class SharedListener {
  readonly #url: string;
  readonly #applicationName: string;
  readonly #log: Logger;
  readonly #subscribers = new Set<Subscriber>();
  /** The connection, once it listens on the channels of the subscribers it had then. */
  #client: pg.Client | undefined;
  /** The running loop and the way to stop it; undefined while nobody listens. */
  #running: { readonly loop: Promise<void>; readonly stopping: AbortController } | undefined;

  constructor(url: string, applicationName: string, log: Logger) {
    this.#url = url;
    this.#applicationName = applicationName;
    this.#log = log;
  }

  /** LISTENs on `channel` for this subscriber; resolves to a function that stops it. */
  subscribe(
    channel: string,
    onNotification: (notification: Notification) => void,
    onConnect: () => void,
    onDisconnect?: () => void,
  ): () => Promise<void> {
    const subscriber: Subscriber = { channel, onNotification, onConnect, onDisconnect };
    const listened = this.#channels().has(channel);
    this.#subscribers.add(subscriber);
    const client = this.#client;
    if (!this.#running) {
      this.#running = this.#start();
    } else if (client) {
      // Already connected: this channel is added on the same connection (a failure there reconnects).
      const adding = listened ? Promise.resolve() : client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      adding.then(
        () => {
          if (this.#subscribers.has(subscriber) && this.#client === client) this.#connected(subscriber);
        },
        (error: unknown) => {
          this.#log.warn({ err: describeError(error), channel }, 'store: LISTEN failed; reconnecting');
          client.connection.stream.destroy();
        },
      );
    }
    return () => this.#unsubscribe(subscriber);
  }

  /** Stops listening on every channel. */
  async close(): Promise<void> {
    this.#subscribers.clear();
    await this.#stop();
  }

  async #unsubscribe(subscriber: Subscriber): Promise<void> {
    if (!this.#subscribers.delete(subscriber)) return;
    if (this.#subscribers.size === 0) {
      await this.#stop();
      return;
    }
    if (!this.#channels().has(subscriber.channel)) {
      await this.#client?.query(`UNLISTEN ${pg.escapeIdentifier(subscriber.channel)}`).catch(() => undefined);
    }
  }

  #channels(): Set<string> {
    return new Set([...this.#subscribers].map((subscriber) => subscriber.channel));
  }

  #start(): { loop: Promise<void>; stopping: AbortController } {
    const stopping = new AbortController();
    return { loop: this.#loop(stopping.signal), stopping };
  }

  async #stop(): Promise<void> {
    const running = this.#running;
    if (!running) return;
    this.#running = undefined;
    running.stopping.abort();
    const ending = this.#client?.end().catch(() => undefined);
    this.#client = undefined;
    // pg may leave end() of a connection that was still connecting unsettled: never wait on it for long.
    await Promise.race([Promise.all([ending, running.loop]), sleep(STOP_WAIT_MS)]);
  }

  async #loop(signal: AbortSignal): Promise<void> {
    // Made once, so that a stop that came before the loop looks still ends the wait.
    const stopped = new Promise<void>((resolve) =>
      signal.addEventListener('abort', () => resolve(), { once: true }),
    );
    const untilStopped = async (work: Promise<unknown>): Promise<void> => {
      work.catch(() => undefined);
      await Promise.race([work, stopped]);
    };
    for (let failures = 0, refused = false; !signal.aborted; refused = false) {
      const current = new pg.Client({
        connectionString: this.#url,
        keepAlive: true,
        application_name: this.#applicationName,
      });
      try {
        const ended = new Promise<void>((resolve) => {
          current.on('error', () => resolve());
          current.on('end', () => resolve());
        });
        // A stop may come while connecting: pg then never settles connect(), so never wait on it alone.
        await untilStopped(current.connect());
        if (signal.aborted) break;
        current.on('notification', (message) => this.#deliver(message.channel, message.payload ?? ''));
        // Set first: a channel subscribed from now on is added by subscribe() on this connection.
        this.#client = current;
        const channels = [...this.#channels()];
        await untilStopped(
          current.query(channels.map((channel) => `LISTEN ${pg.escapeIdentifier(channel)};`).join('')),
        );
        if (signal.aborted) break;
        failures = 0;
        for (const subscriber of [...this.#subscribers]) this.#connected(subscriber);
        await Promise.race([ended, stopped]);
      } catch (error) {
        failures += 1;
        refused = isReadOnlyError(error);
        if (!signal.aborted && !(refused && failures > 1)) {
          this.#log.warn(
            { err: describeError(error) },
            refused
              ? `store: LISTEN refused (the store is a standby in recovery); trying again every ${STANDBY_RETRY_MS} ms`
              : 'store: LISTEN connection failed',
          );
        }
      } finally {
        // Every way out ends the connection, a stop that came while it connected included (it would
        // otherwise stay open and keep the process alive). end() of a connecting client may never settle.
        if (this.#client === current) this.#client = undefined;
        for (const subscriber of [...this.#subscribers]) this.#disconnected(subscriber);
        await Promise.race([current.end().catch(() => undefined), sleep(STOP_WAIT_MS)]);
      }
      if (signal.aborted) break;
      if (refused) {
        // Promotion is what ends it, and it may come any moment: no back-off, and nothing more to say.
        await sleep(STANDBY_RETRY_MS, signal);
        continue;
      }
      const delay = backoffDelay(Math.max(1, failures), { initialMs: 1000, maxMs: 32_000 });
      this.#log.warn({ retryInMs: delay }, `store: LISTEN connection lost; reconnecting in ${delay} ms`);
      await sleep(delay, signal);
    }
  }

  #deliver(channel: string, payload: string): void {
    for (const subscriber of [...this.#subscribers]) {
      if (subscriber.channel !== channel) continue;
      try {
        subscriber.onNotification({ channel, payload });
      } catch (error) {
        this.#log.warn({ err: describeError(error), channel }, 'store: a LISTEN subscriber failed');
      }
    }
  }

  #disconnected(subscriber: Subscriber): void {
    try {
      subscriber.onDisconnect?.();
    } catch (error) {
      this.#log.warn(
        { err: describeError(error), channel: subscriber.channel },
        'store: a LISTEN subscriber failed',
      );
    }
  }

  #connected(subscriber: Subscriber): void {
    try {
      subscriber.onConnect();
    } catch (error) {
      this.#log.warn(
        { err: describeError(error), channel: subscriber.channel },
        'store: a LISTEN subscriber failed',
      );
    }
  }
}
