// Tells a lost or refused connection (retry later, count nothing against the record) from an error of the
// statement itself (the handler's fault, counted as an attempt).

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
/** SQLSTATEs of a server going away or refusing work for now: class 08, admin shutdown, crash, starting up. */
const SERVER_CODES = new Set(['57P01', '57P02', '57P03', '53300']);
const MESSAGES = [
  'Connection terminated',
  'connection terminated',
  'Client has encountered a connection error',
  'Connection is closed',
  'timeout exceeded when trying to connect',
  // pg's client-side query_timeout: the server said nothing for that long (a connection gone silent).
  'Query read timeout',
];

export function isConnectionError(error: unknown): boolean {
  for (let current: unknown = error, depth = 0; current && depth < 5; depth++) {
    if (typeof current !== 'object') return false;
    const code = 'code' in current ? String(current.code) : '';
    if (NETWORK_CODES.has(code) || SERVER_CODES.has(code) || code.startsWith('08')) return true;
    if (current instanceof AggregateError && current.errors.some(isConnectionError)) return true;
    const message = current instanceof Error ? current.message : '';
    if (MESSAGES.some((text) => message.includes(text))) return true;
    current = 'cause' in current ? current.cause : undefined;
  }
  return false;
}
