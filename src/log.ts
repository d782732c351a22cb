// Structured logs on stderr, so that stdout stays free for command output: pino's JSON lines for machines,
// or pino-pretty's lines for people. "auto" picks pretty on a terminal. The pretty printer runs in this
// thread, synchronously (a line is out before the next statement, a crash loses none), and is loaded only
// when chosen, since most runs (services, pipes) never need it.
import { createRequire } from 'node:module';

import { pino } from 'pino';
import type { DestinationStream, Logger as PinoLogger } from 'pino';
import type PinoPretty from 'pino-pretty';

export type Logger = PinoLogger;

/** How log lines are written: for people, for machines, or "auto": pretty on a terminal, JSON elsewhere. */
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface LoggerOptions {
  level: string;
  /** The node's name, on every line. */
  name?: string;
  /** Default: "json". */
  format?: LogFormat;
  /** Whether stderr is a terminal, for "auto". Default: `process.stderr.isTTY`. */
  isTTY?: boolean | undefined;
  /** Whether pretty lines are coloured. Default: on a terminal. */
  colors?: boolean | undefined;
}

export function createLogger(options: LoggerOptions): Logger {
  const isTTY = options.isTTY ?? process.stderr.isTTY;
  const format = chooseLogFormat(options.format ?? 'json', isTTY);
  return pino(
    { level: options.level, base: options.name ? { node: options.name } : {} },
    format === 'pretty'
      ? prettyStream(options.colors ?? isTTY === true)
      : pino.destination({ dest: 2, sync: true }),
  );
}

/** The format "auto" stands for: pretty on a terminal, JSON anywhere else (a file, a pipe, a log collector). */
export function chooseLogFormat(format: LogFormat, isTTY: boolean | undefined): 'json' | 'pretty' {
  if (format !== 'auto') return format;
  return isTTY === true ? 'pretty' : 'json';
}

function prettyStream(colorize: boolean): DestinationStream {
  const require = createRequire(import.meta.url);
  const pretty = require('pino-pretty') as typeof PinoPretty;
  return pretty({
    destination: 2,
    sync: true,
    colorize,
    translateTime: 'SYS:HH:MM:ss.l',
    // One node per terminal, as a rule, and its messages name it where it matters.
    ignore: 'pid,hostname,node',
    singleLine: true,
  });
}
