// Store administration through the node that owns it: the `sql` command and `initdb`. The sql endpoint is
// open only to loopback clients unless a token is configured (and then it needs the token).
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import type { HttpConfig } from '../../config/types.js';
import { trustedRequest } from '../auth.js';
import type { HttpNode } from '../node.js';
import { parseInput } from '../validate.js';
import { rowJson } from '../../util/wire.js';

const migrationBody = z.object({ message: z.string().max(200).default('') }).strict();
const sqlBody = z
  .object({ sql: z.string().min(1), params: z.array(z.unknown()).max(10_000).optional() })
  .strict();

export function registerAdminRoutes(app: FastifyInstance, node: HttpNode, config: HttpConfig): void {
  app.post('/v1/sql', async (request, reply) => {
    if (!trustedRequest(request, config)) {
      return reply
        .code(403)
        .send({ error: 'sql is allowed from loopback only, or with a token', code: 'FORBIDDEN' });
    }
    const body = parseInput(sqlBody, request.body, 'body');
    try {
      const result = await node.sql(body.sql, body.params ?? []);
      return { columns: result.columns, rows: result.rows.map(rowJson) };
    } catch (error) {
      return reply
        .code(400)
        .send({ error: error instanceof Error ? error.message : String(error), code: 'SQL_ERROR' });
    }
  });

  app.post('/v1/initdb', async () => ({ created: await node.initdb() }));
  app.post('/v1/migrate', async () => node.migrate());
  app.post<{ Params: { queue: string } }>('/v1/queues/:queue/migrations', async (request) => {
    const body = parseInput(migrationBody, request.body ?? {}, 'body');
    const made = await node.makeMigration(request.params.queue, body.message);
    return { path: made.path ?? null, statements: made.statements };
  });
}
