// Tells a Redis that is gone or cannot serve for now (retry later, count nothing against the record) from an
// error of the command itself, and turns the former into BackendUnavailableError for the callers.
import { BackendUnavailableError } from '../errors.js';
import { isConnectionError } from '../util/connection-errors.js';

/** Replies of a server that is there but cannot serve for now: retried like a lost connection. */
const TRANSIENT_REPLY = /^(LOADING|BUSY|READONLY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|NOREPLICAS)\b/;

export function isUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.name === 'ReplyError') return TRANSIENT_REPLY.test(error.message);
  return (
    error.name === 'MaxRetriesPerRequestError' ||
    error.message.includes("Stream isn't writeable") ||
    isConnectionError(error)
  );
}

/** A lost or refused connection becomes BackendUnavailableError: retried, never counted as an attempt. */
export function redisError(error: unknown): unknown {
  if (error instanceof BackendUnavailableError || !isUnavailable(error)) return error;
  return new BackendUnavailableError('redis', 'Redis is unreachable', { cause: error });
}

/** Runs Redis commands, throwing what they throw as redisError makes it. */
export async function callRedis<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw redisError(error);
  }
}
