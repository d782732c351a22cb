// Schedules over HTTP: GET /v1/schedules (read scope; a namespace-limited token sees the schedules of its
// namespaces) and POST /v1/schedules/:name/fire (write scope, and the token must reach what the tick does:
// the schedule's namespace, the event's namespace, the queue it publishes to). Any node answers: the
// listing comes from the shared store, and a secondary passes a fire on to the primary.
import type { FastifyInstance } from 'fastify';

import { ForbiddenError, NotFoundError } from '../../errors.js';
import { visibleSchedules } from '../../schedules/status.js';
import { appliedTickJson, scheduleJson } from '../../schedules/wire.js';
import { allowedNamespaces, mayUseQueue, needs } from '../auth.js';
import type { HttpNode } from '../node.js';

export function registerScheduleRoutes(app: FastifyInstance, node: HttpNode): void {
  app.get('/v1/schedules', needs('read', { filtered: true }), async (request) => {
    const schedules = await node.admin.schedules();
    return { schedules: visibleSchedules(schedules, allowedNamespaces(request)).map(scheduleJson) };
  });

  app.post<{ Params: { name: string } }>(
    '/v1/schedules/:name/fire',
    needs('write', { namespaces: 'checked' }),
    async (request) => {
      const { name } = request.params;
      const schedule = node.schedules[name];
      if (!schedule) throw new NotFoundError(`unknown schedule "${name}"`);
      const namespaces = allowedNamespaces(request);
      const reached = [
        schedule.namespace,
        ...(schedule.action.kind === 'event' ? [schedule.action.namespace] : []),
      ];
      if (namespaces && !reached.every((namespace) => namespaces.includes(namespace))) {
        throw new ForbiddenError(
          `this token may not use namespace ${reached.join(' or ')} of schedule "${name}"`,
        );
      }
      if (schedule.action.kind === 'publish' && !mayUseQueue(request, schedule.action.queue)) {
        throw new ForbiddenError(
          `this token may not use queue "${schedule.action.queue}" of schedule "${name}"`,
        );
      }
      return appliedTickJson(await node.admin.fireSchedule(name));
    },
  );
}
