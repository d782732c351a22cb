// Store administration through the node that owns it: `sql`, `initdb` and `migrate`, for tokens with the
// admin scope. The sql endpoint is open only to loopback clients unless a token is configured.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import type { HttpConfig } from '../../config/types.js';
import { ForbiddenError } from '../../errors.js';
import { queryResultJson } from '../../store/wire.js';
import { needs, trustedRequest } from '../auth.js';
import type { HttpNode } from '../node.js';
import { parseInput } from '../validate.js';

const sqlBody = z
  .object({ sql: z.string().min(1), params: z.array(z.unknown()).max(10_000).optional() })
  .strict();

export function registerAdminRoutes(app: FastifyInstance, node: HttpNode, config: HttpConfig): void {
  app.post('/v1/sql', needs('admin'), async (request) => {
    if (!trustedRequest(request, config)) {
      throw new ForbiddenError('sql is allowed from loopback only, or with a token');
    }
    const body = parseInput(sqlBody, request.body, 'body');
    // A statement the store refuses is a StatementError (400); an unreachable store is not the caller's.
    return queryResultJson(await node.admin.sql(body.sql, body.params ?? []));
  });

  app.post('/v1/initdb', needs('admin'), async () => ({ created: await node.admin.initdb() }));
  app.post('/v1/migrate', needs('admin'), async () => node.admin.migrate());
}
