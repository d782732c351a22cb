// The one way Baton's clients call a node's HTTP API: the token, a deadline on every request, and errors
// rebuilt as the node threw them (errorFromReply). A node that cannot be reached, or does not answer in
// time, is a BackendUnavailableError: transient, like a node that answers 503.
import type { z } from 'zod';

import { BackendUnavailableError, BadRequestError, errorFromReply, RemoteError } from '../errors.js';

/** A plain request that takes longer than this is abandoned (a caller may retry it). */
export const REQUEST_TIMEOUT_MS = 30_000;

export interface RequestOptions {
  /** A JSON body. */
  readonly json?: unknown;
  /** A raw body (with `contentType`). */
  readonly body?: Buffer;
  readonly contentType?: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Default REQUEST_TIMEOUT_MS; 0: no deadline (a stream), ended by `signal` only. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export class HttpClient {
  /** Base URL of the node, without a trailing slash. */
  readonly base: string;
  readonly #token: string | undefined;
  readonly #timeoutMs: number;

  constructor(base: string, options: { token?: string | undefined; timeoutMs?: number } = {}) {
    this.base = base.replace(/\/+$/, '');
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  }

  /** Sends a request and parses the JSON answer with `schema`; an error answer throws its typed error. */
  async call<T extends z.ZodType>(
    schema: T,
    method: string,
    path: string,
    options: RequestOptions = {},
  ): Promise<z.infer<T>> {
    const response = await this.send(method, path, options);
    const reply: unknown = await response.json().catch(() => undefined);
    const parsed = schema.safeParse(reply);
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'the answer';
    throw new RemoteError(
      `${method} ${path}: the node at ${this.base} answered something else than expected (${where}: ${issue?.message ?? 'malformed'})`,
      response.status,
      undefined,
    );
  }

  /** Sends a request; resolves with a successful response, throws the typed error of any other. */
  async send(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { ...options.headers };
    if (this.#token) headers['authorization'] = `Bearer ${this.#token}`;
    let body: string | Buffer | undefined;
    if (options.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.json);
    } else if (options.body !== undefined) {
      headers['content-type'] = options.contentType ?? 'application/octet-stream';
      body = options.body;
    }
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const signals = [
      ...(options.signal ? [options.signal] : []),
      ...(timeoutMs > 0 ? [AbortSignal.timeout(timeoutMs)] : []),
    ];
    let response: Response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        ...(body !== undefined ? { body } : {}),
        ...(signals.length > 0 ? { signal: AbortSignal.any(signals) } : {}),
      });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      if (error instanceof TypeError && /invalid url|failed to parse url/i.test(error.message)) {
        throw new BadRequestError(`${this.base}: not a usable URL`, { cause: error });
      }
      const reason =
        error instanceof Error && error.name === 'TimeoutError'
          ? `no answer within ${timeoutMs} ms`
          : 'cannot be reached';
      throw new BackendUnavailableError(`the node at ${this.base}`, reason, { cause: unwrapFetch(error) });
    }
    if (response.ok) return response;
    const reply: unknown = await response.json().catch(() => undefined);
    throw errorFromReply(response.status, reply, this.base);
  }
}

/** fetch() fails with "fetch failed" and the reason (ECONNREFUSED, …) as its cause. */
function unwrapFetch(error: unknown): unknown {
  return error instanceof TypeError && error.cause instanceof Error ? error.cause : error;
}
