// Parses request input with a zod schema; a failure is a 400 that names the field.
import type { z } from 'zod';

import { BadRequestError } from '../errors.js';

export function parseInput<T extends z.ZodType>(schema: T, input: unknown, where: string): z.infer<T> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = issue && issue.path.length > 0 ? `${where}.${issue.path.join('.')}` : where;
  throw new BadRequestError(`invalid ${path}: ${issue?.message ?? 'malformed'}`);
}
