// Commands on records: `publish`, `errors`, `replay-errors`, `drop-errors`, `queues`.
import type { ReadStream } from 'node:fs';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';

import type { Command } from 'commander';

import { UnknownErrorRecordError } from '../../errors.js';
import { errorQueueName } from '../../queue/backend.js';
import type { PublishOptions } from '../../queue/delay.js';
import { checkDelay, parseDuration, parseTime } from '../../queue/delay.js';
import { checkKey } from '../../util/record-key.js';
import type { CliContext } from '../context.js';
import { formatTable, progressBar, queuesTable, recordPreview } from '../output.js';
import { readLineBatches } from '../stdin.js';

const PUBLISH_BATCH = 1000;

interface PublishFlags {
  file?: string;
  delay?: string;
  at?: string;
  key?: string;
  id?: string;
  json?: boolean;
}

/**
 * --delay / --at as publish takes them, checked before anything is read or sent. A delay counts from when
 * each batch is stored (a long file's last lines wait from their own publish, never less than asked).
 */
function publishOptions(flags: PublishFlags): PublishOptions {
  const delayMs = flags.delay === undefined ? undefined : parseDuration(flags.delay, '--delay');
  const runAt = flags.at === undefined ? undefined : parseTime(flags.at, '--at');
  checkDelay({ delayMs, runAt }, { delay: '--delay', at: '--at' });
  if (flags.key !== undefined) checkKey(flags.key, '--key');
  if (flags.id !== undefined) checkKey(flags.id, '--id');
  return { delayMs, runAt, key: flags.key };
}

/** The ids --id gives records `first`… of a batch of `count`: `<id>#n` (from 1) when read from lines. */
function lineIds(id: string | undefined, first: number, count: number): PublishOptions['ids'] {
  return id === undefined
    ? undefined
    : Array.from({ length: count }, (_, index) => `${id}#${first + index + 1}`);
}
const REPLAY_CHUNK = 500;

export function registerRecordCommands(program: Command, ctx: CliContext): void {
  program
    .command('publish')
    .description(
      'put records into a queue: one given as an argument, or one per line from stdin ("-") or a file (--file)',
    )
    .argument('<queue>', 'queue name')
    .argument('[record]', 'the record, or "-" to read one record per line from stdin')
    .option(
      '-f, --file <path>',
      'read one record per line from this file (with a progress bar on a terminal)',
    )
    .option('--delay <duration>', 'run the records no sooner than this from now (30s, 500ms, 5m, 2h, 1d)')
    .option('--at <time>', 'run the records no sooner than this time (ISO 8601 with an offset)')
    .option('--key <key>', 'the key of the records (ordering = "key" keeps each key\'s records in order)')
    .option(
      '--id <id>',
      'idempotency id: a record with an id seen within the dedup window is dropped (line n of many: <id>#n)',
    )
    .option('--json', 'print the result as JSON')
    .action(async (queue: string, record: string | undefined, options: PublishFlags) => {
      if ((record === undefined) === (options.file === undefined)) {
        throw new Error('give either a record (or "-" for stdin) or --file <path>, not both');
      }
      const when = publishOptions(options);
      const accepted = await ctx.withAdmin(async (admin) => {
        if (record !== undefined && record !== '-') {
          const ids = options.id === undefined ? undefined : [options.id];
          return admin.publish(queue, [Buffer.from(record)], { ...when, ids });
        }
        const source = options.file === undefined ? undefined : await openRecordFile(options.file);
        const progress =
          source && !options.json ? progressBar(ctx.io.stderr, 'publishing (bytes)', source.size) : undefined;
        let total = 0;
        let read = 0;
        for await (const batch of readLineBatches(source?.stream ?? ctx.io.stdin, PUBLISH_BATCH)) {
          total += await admin.publish(queue, batch, {
            ...when,
            ids: lineIds(options.id, read, batch.length),
          });
          read += batch.length;
          if (source) progress?.update(source.stream.bytesRead);
        }
        progress?.finish();
        return total;
      });
      if (options.json) ctx.printJson({ queue, accepted });
      else ctx.print(`accepted ${accepted} record${accepted === 1 ? '' : 's'} into queue "${queue}"`);
    });

  program
    .command('queues')
    .description('list the queues: depth, in flight, processed, failed, errors waiting')
    .option('--json', 'print as JSON')
    .action(async (options: { json?: boolean }) => {
      const queues = await ctx.withAdmin((admin) => admin.queues());
      if (options.json) {
        const { queueJson } = await import('../../queue/wire.js');
        return ctx.printJson({ queues: queues.map(queueJson) });
      }
      ctx.print(queuesTable(queues));
    });

  program
    .command('errors')
    .description("list the records in a queue's error queue (errors-<queue>)")
    .argument('<queue>', 'queue name')
    .option('-n, --limit <n>', 'how many to list', '100')
    .option('--after <id>', 'list the oldest records with ids above this one (the next page)')
    .option('--before <id>', 'list the newest records with ids below this one (the page before)')
    .option('--json', 'print as JSON (payloads in base64)')
    .action(
      async (queue: string, options: { limit: string; after?: string; before?: string; json?: boolean }) => {
        const limit = positive(options.limit, '--limit');
        const errors = await ctx.withAdmin((admin) =>
          admin.listErrors(queue, {
            limit,
            ...(options.after === undefined ? {} : { afterId: oneId(options.after, '--after') }),
            ...(options.before === undefined ? {} : { beforeId: oneId(options.before, '--before') }),
          }),
        );
        if (options.json) {
          const { errorRecordJson } = await import('../../queue/wire.js');
          return ctx.printJson({
            queue,
            error_queue: errorQueueName(queue),
            errors: errors.map(errorRecordJson),
          });
        }
        if (errors.length === 0) {
          const where = options.after ?? options.before;
          return ctx.print(
            where === undefined
              ? `${errorQueueName(queue)} is empty`
              : `no more records in ${errorQueueName(queue)}`,
          );
        }
        ctx.print(
          formatTable(
            ['id', 'attempts', 'failed at', 'error', 'record'],
            errors.map((e) => [
              e.id,
              String(e.attempts),
              e.failedAt.toISOString(),
              e.error,
              recordPreview(e.payload),
            ]),
          ),
        );
        // A full page may have more behind it: say how to ask for the next one (on stderr, out of pipes).
        if (errors.length === limit && options.before === undefined) {
          ctx.io.stderr.write(`next page: baton errors ${queue} --after ${errors.at(-1)?.id ?? ''}\n`);
        }
      },
    );

  program
    .command('replay-errors')
    .description('move records from errors-<queue> back into the queue, to be processed again')
    .argument('<queue>', 'queue name')
    .option('--ids <ids>', 'comma-separated error record ids (default: all)')
    .option('--json', 'print the result as JSON')
    .action(async (queue: string, options: { ids?: string; json?: boolean }) => {
      const replayed = await ctx.withAdmin(async (admin) => {
        if (options.ids) return admin.replayErrors(queue, { ids: parseIds(options.ids), limit: 100_000 });
        // Count first and replay that many: records that fail again meanwhile are not replayed twice.
        const total = (await admin.queues()).find((q) => q.name === queue)?.errors ?? 0;
        const progress =
          total > REPLAY_CHUNK && !options.json ? progressBar(ctx.io.stderr, 'replaying', total) : undefined;
        let done = 0;
        while (done < total) {
          const moved = await admin.replayErrors(queue, { limit: Math.min(REPLAY_CHUNK, total - done) });
          if (moved === 0) break;
          done += moved;
          progress?.update(done);
        }
        progress?.finish();
        return done;
      });
      if (options.json) ctx.printJson({ queue, replayed });
      else
        ctx.print(
          `replayed ${replayed} record${replayed === 1 ? '' : 's'} from ${errorQueueName(queue)} into "${queue}"`,
        );
    });

  program
    .command('drop-errors')
    .description('delete records from errors-<queue> for good')
    .argument('<queue>', 'queue name')
    .argument('<ids...>', 'error record ids')
    .action(async (queue: string, ids: string[]) => {
      const { dropped, missing } = await ctx.withAdmin(async (admin) => {
        let count = 0;
        const absent: string[] = [];
        // One id at a time, so that those that name no error record are known.
        for (const id of new Set(parseIds(ids.join(',')).map((text) => BigInt(text).toString()))) {
          if ((await admin.dropErrors(queue, [id])) > 0) count += 1;
          else absent.push(id);
        }
        return { dropped: count, missing: absent };
      });
      ctx.print(`dropped ${dropped} record${dropped === 1 ? '' : 's'} from ${errorQueueName(queue)}`);
      if (missing.length > 0) throw new UnknownErrorRecordError(queue, missing);
    });
}

async function openRecordFile(path: string): Promise<{ stream: ReadStream; size: number }> {
  const info = await stat(path).catch((error: unknown) => {
    throw new Error(`cannot read ${path}: ${(error as Error).message}`);
  });
  if (!info.isFile()) throw new Error(`${path} is not a file`);
  return { stream: createReadStream(path), size: info.size };
}

function parseIds(text: string): string[] {
  const ids = text
    .split(',')
    .map((id) => id.trim())
    .filter(Boolean);
  const bad = ids.find((id) => !/^\d+$/.test(id));
  if (bad !== undefined) throw new Error(`invalid error record id "${bad}": ids are numbers`);
  return ids;
}

function oneId(text: string, flag: string): string {
  const [id, ...more] = parseIds(text);
  if (id === undefined || more.length > 0)
    throw new Error(`${flag} takes one error record id, got "${text}"`);
  return id;
}

function positive(text: string, flag: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1)
    throw new Error(`${flag} must be a positive integer, got "${text}"`);
  return value;
}
