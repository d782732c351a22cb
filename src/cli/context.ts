// What every command shares: the global options, the resolved config (loaded once, on first use), and
// access to the store's admin operations, through the owner node when one runs, else opened locally.
// The config loader, the logger and the admin modules are imported on first use, not when the commands are
// registered (see main.ts).
import type { ResolvedConfig } from '../config/types.js';
import { StoreLockedError } from '../errors.js';
import type { LogFormat, Logger } from '../log.js';
import type { Admin } from '../admin/admin.js';
import type { LockOwner } from '../store/lock.js';
import { liveStoreOwner } from '../store/lock.js';
import { sleep } from '../util/sleep.js';

export interface GlobalOptions {
  config?: string;
  verbose?: boolean;
  /** Overrides [log] format. */
  logFormat?: LogFormat;
}

export interface CliIo {
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stdin: NodeJS.ReadableStream;
  readonly env: Record<string, string | undefined>;
  readonly cwd: string;
}

export class CliContext {
  readonly io: CliIo;
  #options: GlobalOptions = {};
  #config: Promise<ResolvedConfig> | undefined;

  constructor(io: CliIo) {
    this.io = io;
  }

  setOptions(options: GlobalOptions): void {
    this.#options = options;
    this.#config = undefined;
  }

  config(overrides: Record<string, unknown> = {}): Promise<ResolvedConfig> {
    const options = this.#options;
    this.#config ??= import('../config/load.js').then(({ loadConfig }) =>
      loadConfig({
        ...(options.config !== undefined ? { file: options.config } : {}),
        cwd: this.io.cwd,
        env: this.io.env,
        overrides: { log: { format: options.logFormat }, ...overrides },
      }).then((config) => (options.verbose ? atLeastDebug(config) : config)),
    );
    return this.#config;
  }

  async logger(): Promise<Logger> {
    const config = await this.config();
    const { createLogger } = await import('../log.js');
    return createLogger({
      level: config.log.level,
      name: config.node.name,
      format: config.log.format,
      isTTY: this.io.stderr.isTTY,
      // https://no-color.org: present and not empty, it turns colours off.
      colors: this.io.stderr.isTTY === true && !this.io.env['NO_COLOR'],
    });
  }

  /** Runs `fn` with admin access to the store, and closes it afterwards. */
  async withAdmin<T>(fn: (admin: Admin) => Promise<T>): Promise<T> {
    const admin = await this.openAdmin();
    try {
      return await fn(admin);
    } finally {
      await admin.close();
    }
  }

  async openAdmin(): Promise<Admin> {
    const config = await this.config();
    const owner = config.store.kind === 'embedded' ? await this.#ownerAddress(config) : undefined;
    if (owner?.address) {
      const { HttpAdmin } = await import('../admin/http-admin.js');
      return new HttpAdmin(owner.address, { token: config.http.adminToken, config });
    }
    if (owner) {
      throw new StoreLockedError(
        `the embedded store in ${config.node.dataDir} is in use by pid ${owner.pid}, which has no HTTP API to go through (is [http] enabled?)`,
        owner.pid,
      );
    }
    const { openStoreAdmin } = await import('../admin/open.js');
    return openStoreAdmin(config, await this.logger());
  }

  /**
   * The live owner of the embedded store, if any. A node that is still starting holds the lock before its
   * HTTP API listens: wait for its address (up to the startup timeout) rather than fail.
   */
  async #ownerAddress(config: ResolvedConfig): Promise<LockOwner | undefined> {
    const deadline = Date.now() + config.node.startupTimeoutMs;
    let owner = await liveStoreOwner(config.node.dataDir);
    if (owner && !owner.address && config.http.enabled) {
      this.io.stderr.write(
        owner.kind === 'command'
          ? `baton: waiting for another baton command (pid ${owner.pid}) to release the store…\n`
          : `baton: waiting for the node (pid ${owner.pid}) that is starting on this store…\n`,
      );
    }
    while (owner && !owner.address && config.http.enabled && Date.now() < deadline) {
      await sleep(200);
      owner = await liveStoreOwner(config.node.dataDir);
    }
    return owner;
  }

  print(line = ''): void {
    this.io.stdout.write(`${line}\n`);
  }

  printJson(value: unknown): void {
    this.io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }
}

/** `-v`: debug logs, or the configured level when it already says more (trace). */
function atLeastDebug(config: ResolvedConfig): ResolvedConfig {
  if (config.log.level === 'trace' || config.log.level === 'debug') return config;
  return { ...config, log: { ...config.log, level: 'debug' } };
}
