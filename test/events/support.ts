// Helpers of the event tests: JSON calls to a node, an SSE reader that collects events until it has enough,
// and polling with a deadline.
import { setTimeout as delay } from 'node:timers/promises';

export interface JsonReply {
  status: number;
  body: Record<string, unknown>;
}

export async function call(
  base: string,
  method: string,
  path: string,
  options: { json?: unknown; token?: string; headers?: Record<string, string> } = {},
): Promise<JsonReply> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers['authorization'] = `Bearer ${options.token}`;
  if (options.json !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(base + path, {
    method,
    headers,
    ...(options.json !== undefined ? { body: JSON.stringify(options.json) } : {}),
    signal: AbortSignal.timeout(15_000),
  });
  const body = (await response.json().catch(() => ({}))) as Record<string, unknown>;
  return { status: response.status, body };
}

export interface SseEvent {
  id: string | undefined;
  type: string | undefined;
  data: Record<string, unknown>;
}

export interface SseReader {
  readonly status: number;
  /** Resolves with the first `count` events received (rejects after `timeoutMs`). */
  take(count: number, timeoutMs?: number): Promise<SseEvent[]>;
  /** Resolves when the server ends the stream. */
  ended(timeoutMs?: number): Promise<void>;
  close(): void;
}

/** Opens an event stream and parses what comes (events, ignoring comments). */
export async function openStream(
  url: string,
  options: { token?: string; lastEventId?: string } = {},
): Promise<SseReader> {
  const controller = new AbortController();
  const headers: Record<string, string> = { accept: 'text/event-stream' };
  if (options.token) headers['authorization'] = `Bearer ${options.token}`;
  if (options.lastEventId !== undefined) headers['last-event-id'] = options.lastEventId;
  const response = await fetch(url, { headers, signal: controller.signal });
  const events: SseEvent[] = [];
  let finished = false;
  let buffer = '';
  const pump = (async () => {
    if (!response.body) return;
    const decoder = new TextDecoder();
    try {
      for await (const chunk of response.body) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = block.split('\n').filter((line) => !line.startsWith(':'));
          const field = (name: string): string | undefined =>
            fields
              .find((line) => line.startsWith(`${name}:`))
              ?.slice(name.length + 1)
              .trim();
          const data = field('data');
          if (data !== undefined) {
            events.push({
              id: field('id'),
              type: field('event'),
              data: JSON.parse(data) as Record<string, unknown>,
            });
          }
        }
      }
    } catch {
      // aborted by close()
    } finally {
      finished = true;
    }
  })();
  return {
    status: response.status,
    async take(count, timeoutMs = 15_000) {
      await until(() => events.length >= count || finished, timeoutMs, `${count} events from ${url}`);
      if (events.length < count)
        throw new Error(`the stream ended after ${events.length} of ${count} events`);
      return events.slice(0, count);
    },
    async ended(timeoutMs = 15_000) {
      await until(() => finished, timeoutMs, `the end of ${url}`);
      await pump;
    },
    close() {
      controller.abort();
    },
  };
}

/** Polls `condition` every 20 ms until it holds; rejects naming `what` after `timeoutMs`. */
export async function until(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(20);
  }
}

/** Offsets must go up by exactly one between consecutive events of a gap-free log. */
export function assertConsecutive(offsets: readonly number[]): void {
  for (let index = 1; index < offsets.length; index++) {
    const previous = offsets[index - 1] ?? 0;
    if (offsets[index] !== previous + 1) {
      throw new Error(`offset ${String(offsets[index])} follows ${previous}: skipped or repeated`);
    }
  }
}
