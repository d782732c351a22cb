// Store administration through the node that owns it: `sql`, `initdb` and `migrate`. The sql endpoint is
// open only to loopback clients unless a token is configured (and then it needs the token).
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import type { HttpConfig } from '../../config/types.js';
import { BatonError, coerceError, ForbiddenError, StatementError } from '../../errors.js';
import { isConnectionError } from '../../util/connection-errors.js';
import { queryResultJson } from '../../store/wire.js';
import { trustedRequest } from '../auth.js';
import type { HttpNode } from '../node.js';
import { parseInput } from '../validate.js';

const sqlBody = z
  .object({ sql: z.string().min(1), params: z.array(z.unknown()).max(10_000).optional() })
  .strict();

export function registerAdminRoutes(app: FastifyInstance, node: HttpNode, config: HttpConfig): void {
  app.post('/v1/sql', async (request) => {
    if (!trustedRequest(request, config)) {
      throw new ForbiddenError('sql is allowed from loopback only, or with a token');
    }
    const body = parseInput(sqlBody, request.body, 'body');
    const result = await node.admin.sql(body.sql, body.params ?? []).catch((error: unknown) => {
      // The statement's own failure is the caller's (400); an unreachable store is not.
      if (error instanceof BatonError || isConnectionError(error)) throw error;
      const code: unknown =
        typeof error === 'object' && error !== null ? Reflect.get(error, 'code') : undefined;
      throw new StatementError(coerceError(error).message, {
        sqlState: typeof code === 'string' ? code : undefined,
        cause: error,
      });
    });
    return queryResultJson(result);
  });

  app.post('/v1/initdb', async () => ({ created: await node.admin.initdb() }));
  app.post('/v1/migrate', async () => node.admin.migrate());
}
