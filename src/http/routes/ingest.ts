// POST /v1/queues/:queue/records: a raw body is one record; `application/x-ndjson` is one record per line.
// Records are bytes: the body is never decoded as text, except envelopes (ingest-body.ts), which are JSON,
// and records of a queue with a payload schema, which the node checks before it stores any.
import type { FastifyInstance } from 'fastify';

import { BadRequestError, InvalidPayloadError, UnknownQueueError } from '../../errors.js';
import { lineNumbers } from '../../util/lines.js';
import { needs } from '../auth.js';
import type { HttpNode } from '../node.js';
import { readIngestBody } from '../ingest-body.js';

export function registerIngestRoutes(app: FastifyInstance, node: HttpNode): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));

  const access = needs('write', { queueParam: 'queue' });
  app.post<{ Params: { queue: string } }>('/v1/queues/:queue/records', access, async (request, reply) => {
    const { queue } = request.params;
    if (!node.queueNames.includes(queue)) throw new UnknownQueueError(queue, node.queueNames);
    const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
    const ndjson =
      (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() === 'application/x-ndjson';
    const { records, options } = readIngestBody(body, request.headers, ndjson);
    if (records.length === 0) throw new BadRequestError('empty body: no record to accept');
    const result = await node.ingest(queue, records, options).catch((error: unknown) => {
      throw ndjson ? withLine(error, body) : error;
    });
    return reply.code(202).send({ accepted: result.accepted });
  });
}

/** A record of an NDJSON body refused for its payload, named by its line too (blank lines are not records). */
function withLine(error: unknown, body: Buffer): unknown {
  if (!(error instanceof InvalidPayloadError)) return error;
  const line = lineNumbers(body)[error.record - 1];
  return new InvalidPayloadError(error.reason, { record: error.record, count: error.count, line });
}
