// `baton events send | list | count | listen`: the event log from the command line, through the node that owns
// the store when one runs (or the node at --url), else on the store opened by the command itself.
import type { Command } from 'commander';

import type { ListenFrom } from '../../events/client.js';
import type { EventTransport } from '../../events/transport.js';
import type { EventQuery, StoredEvent } from '../../events/types.js';
import { InvalidEventError } from '../../events/types.js';
import type { CliContext } from '../context.js';
import { startedByPackageManager, watchLauncher } from '../launcher.js';
import { formatTable } from '../output.js';

interface TargetOptions {
  url?: string;
  token?: string;
}

interface FilterOptions extends TargetOptions {
  namespace?: string;
  key?: string[];
  sender?: string;
  from?: string;
  to?: string;
  json?: boolean;
}

export function registerEventCommands(program: Command, ctx: CliContext): void {
  const events = program
    .command('events')
    .description('send, list, count and listen to events of the event log')
    .option(
      '--url <url>',
      "a node's base URL, or several separated by commas (default: BATON_URL, else the node that owns the embedded store, else the store)",
    )
    .option('--token <token>', 'bearer token for --url (default: BATON_TOKEN)');

  events
    .command('send')
    .description('send one event; prints it with its offset')
    .argument('<key>', 'event key')
    .argument('[value]', 'event value (text)')
    .option('--namespace <namespace>', 'namespace (default: BATON_NAMESPACE, else "default")')
    .option('--context <json>', 'context, a JSON text')
    .option('--sender <sender>', 'sender')
    .option('--json', 'print the stored event as JSON')
    .action(
      async (
        key: string,
        value: string | undefined,
        options: { namespace?: string; context?: string; sender?: string; json?: boolean },
        command: Command,
      ) => {
        const [{ EventClient }, { eventJson }] = await Promise.all([
          import('../../events/client.js'),
          import('../../events/wire.js'),
        ]);
        const event = await withEvents(ctx, command, async (transport) => {
          const client = new EventClient(transport, {
            env: ctx.io.env,
            ...(options.namespace !== undefined ? { namespace: options.namespace } : {}),
            ...(options.sender !== undefined ? { sender: options.sender } : {}),
          });
          try {
            return await client.sendEvent(key, value ?? null, {
              ...(options.context !== undefined ? { context: options.context } : {}),
            });
          } finally {
            await client.close();
          }
        });
        if (options.json) return ctx.printJson(eventJson(event));
        ctx.print(
          `sent "${event.key}" to namespace "${event.namespace}" at offset ${event.offset}` +
            (event.duplicate ? ' (already stored)' : ''),
        );
      },
    );

  filterOptions(
    events
      .command('list')
      .description('list events in offset order (all namespaces unless --namespace)')
      .option('-n, --limit <n>', 'how many to list', '100'),
  ).action(async (options: FilterOptions & { limit: string }, command: Command) => {
    const query = { ...filterQuery(options), limit: positive(options.limit, '--limit') };
    const listed = await withEvents(ctx, command, (transport) => transport.list(query));
    if (options.json) {
      const { eventJson } = await import('../../events/wire.js');
      return ctx.printJson({ events: listed.map(eventJson) });
    }
    if (listed.length === 0) return ctx.print('no events');
    ctx.print(eventsTable(listed));
  });

  filterOptions(
    events
      .command('count')
      .description('count events (all namespaces unless --namespace), up to --cap')
      .option('--cap <n>', 'stop counting at this many (default 100000)'),
  ).action(async (options: FilterOptions & { cap?: string }, command: Command) => {
    const query = filterQuery(options);
    const upTo = options.cap === undefined ? undefined : positive(options.cap, '--cap');
    const { count, capped } = await withEvents(ctx, command, (transport) => transport.count(query, upTo));
    if (options.json) return ctx.printJson({ count, capped });
    ctx.print(capped ? `≥ ${count} (counting stops there; --cap to count further)` : String(count));
  });

  events
    .command('listen')
    .description('print events of some keys as they come, one JSON object per line, until Ctrl-C')
    .argument('<keys...>', 'event keys ("*" for every key)')
    .option('--namespace <namespace>', 'namespace (default: BATON_NAMESPACE, else "default")')
    .option('--from <from>', '"latest", an offset (exclusive; 0 = all history) or an ISO time', 'latest')
    .option('--name <name>', 'a named listener: its offset is stored, and it resumes there next time')
    .action(
      async (
        keys: string[],
        options: { namespace?: string; from: string; name?: string },
        command: Command,
      ) => {
        const from = parseFrom(options.from);
        const [{ EventClient }, { eventJson }] = await Promise.all([
          import('../../events/client.js'),
          import('../../events/wire.js'),
        ]);
        await withEvents(ctx, command, async (transport) => {
          const log = await ctx.logger().catch(() => undefined);
          const client = new EventClient(transport, {
            env: ctx.io.env,
            ...(options.namespace !== undefined ? { namespace: options.namespace } : {}),
            ...(log ? { log } : {}),
          });
          let unwatch = (): void => undefined;
          const stopped = new Promise<void>((resolve) => {
            process.once('SIGINT', () => resolve());
            process.once('SIGTERM', () => resolve());
            // Under npx the SIGTERM meant for this command ends the shell between them (see launcher.ts).
            if (startedByPackageManager(ctx.io.env)) unwatch = watchLauncher(() => resolve());
          });
          await client.registerListener(
            (batch) => {
              for (const event of batch) ctx.io.stdout.write(`${JSON.stringify(eventJson(event))}\n`);
            },
            keys.includes('*') ? [] : keys,
            { from, ...(options.name !== undefined ? { name: options.name } : {}) },
          );
          await stopped;
          unwatch();
          await client.close();
        });
      },
    );
}

function filterOptions(command: Command): Command {
  return command
    .option('--namespace <namespace>', 'only this namespace')
    .option('--key <key...>', 'only these keys')
    .option('--sender <sender>', 'only this sender')
    .option('--from <offset>', 'only after this offset (exclusive)')
    .option('--to <offset>', 'only up to this offset (inclusive)')
    .option('--json', 'print as JSON');
}

function filterQuery(options: FilterOptions): EventQuery {
  return {
    ...(options.namespace !== undefined ? { namespace: options.namespace } : {}),
    ...(options.key && options.key.length > 0 ? { keys: options.key } : {}),
    ...(options.sender !== undefined ? { sender: options.sender } : {}),
    ...(options.from !== undefined ? { after: offset(options.from, '--from') } : {}),
    ...(options.to !== undefined ? { to: offset(options.to, '--to') } : {}),
  };
}

/** Runs `fn` on the event log: at --url when given, else through the admin access of the config. */
async function withEvents<T>(
  ctx: CliContext,
  command: Command,
  fn: (transport: EventTransport) => Promise<T>,
): Promise<T> {
  const target = command.optsWithGlobals<TargetOptions>();
  // Inside a task run (or wherever BATON_URL is set), the node that runs it; several URLs: the first live one.
  const url = target.url ?? nonEmptyEnv(ctx.io.env['BATON_URL']);
  if (url !== undefined) {
    const [{ HttpEventTransport }, { FailoverEventTransport, parseNodeUrls }] = await Promise.all([
      import('../../events/http-transport.js'),
      import('../../events/failover-transport.js'),
    ]);
    const token = target.token ?? ctx.io.env['BATON_TOKEN'];
    const urls = parseNodeUrls(url, target.url === undefined ? 'BATON_URL' : '--url');
    return fn(
      urls.length === 1
        ? new HttpEventTransport(urls[0] as string, token)
        : new FailoverEventTransport(urls, { token }),
    );
  }
  return ctx.withAdmin(async (admin) => {
    return fn(await admin.openEvents());
  });
}

function nonEmptyEnv(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

function eventsTable(events: readonly StoredEvent[]): string {
  return formatTable(
    ['offset', 'time', 'namespace', 'key', 'value', 'sender', 'context'],
    events.map((event) => [
      String(event.offset),
      new Date(event.createTime).toISOString(),
      event.namespace,
      event.key,
      event.value ?? '',
      event.sender ?? '',
      event.context ?? '',
    ]),
  );
}

function parseFrom(text: string): ListenFrom {
  if (text === 'latest') return 'latest';
  if (/^\d+$/.test(text)) return offset(text, '--from');
  const time = new Date(text);
  if (Number.isNaN(time.getTime())) {
    throw new InvalidEventError(
      `--from: expected "latest", an offset or an ISO time (2025-01-31T12:00:00Z), got "${text}"`,
    );
  }
  return time;
}

function offset(text: string, flag: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value)) {
    throw new InvalidEventError(`${flag}: expected an offset (an integer >= 0), got "${text}"`);
  }
  return value;
}

function positive(text: string, flag: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1)
    throw new InvalidEventError(`${flag}: expected a positive integer, got "${text}"`);
  return value;
}
