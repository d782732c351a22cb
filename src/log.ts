// Structured logs (pino, JSON lines on stderr so that stdout stays free for command output).
import { pino } from 'pino';
import type { Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

export function createLogger(options: { level: string; name?: string }): Logger {
  return pino(
    { level: options.level, base: options.name ? { node: options.name } : {} },
    pino.destination({ dest: 2, sync: true }),
  );
}
