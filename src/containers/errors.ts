import { ConflictError, HttpError, NotFoundError } from '../util/errors.js';

/** The board's Docker engine cannot be reached (socket gone, refused, timed out, TLS rejected). */
export class HostUnavailableError extends HttpError {
  constructor(
    readonly hostId: string,
    message: string,
    /** The short reason (ECONNREFUSED, "no answer to ping within 3000 ms"), for placement messages. */
    readonly reason: string,
    cause?: unknown,
  ) {
    super(503, message, { cause });
  }
}

/** The board cannot enforce the disk quota a lease asked for, and the policy (`require`) needs one. */
export class QuotaUnenforceableError extends ConflictError {
  constructor(
    readonly hostId: string,
    readonly detail: string,
  ) {
    super(`shared board ${hostId} cannot enforce a disk quota: ${detail}`);
  }
}

/** Docker answered with an error we don't map to a more specific status. */
export class EngineError extends HttpError {
  constructor(
    readonly hostId: string,
    readonly engineStatus: number | undefined,
    message: string,
    cause?: unknown,
  ) {
    super(502, message, { cause });
  }
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ENOENT',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ECONNABORTED',
]);

interface DockerishError {
  code?: string;
  statusCode?: number;
  json?: { message?: string } | null;
  message?: string;
}

/** True for errors that say "the engine isn't there" rather than "the engine said no". */
export function isConnectionError(err: unknown): boolean {
  const e = err as DockerishError;
  if (!e || typeof e !== 'object') return false;
  if (e.statusCode !== undefined) return false;
  if (e.code && (CONNECTION_CODES.has(e.code) || e.code.startsWith('ERR_SSL') || e.code.startsWith('ERR_TLS'))) return true;
  return /socket hang up|timed? ?out|certificate|self[- ]signed|unable to verify/i.test(e.message ?? '');
}

/** Docker's own message ("No such container: x") without docker-modem's "(HTTP code 404) ..." wrapper. */
export function engineMessage(err: unknown): string {
  const e = err as DockerishError;
  const m = e?.json && typeof e.json === 'object' && e.json.message ? e.json.message : (e?.message ?? String(err));
  return m.replace(/^\(HTTP code \d+\) [^-]*- /, '').trim();
}

export function engineStatus(err: unknown): number | undefined {
  return (err as DockerishError)?.statusCode;
}

/**
 * Turns an error from a Docker call on `hostDesc` into one of ours: unreachable → 503 naming the host;
 * 404 → NotFoundError for `notFound` (when given); anything else → 502 with Docker's message.
 */
export function mapEngineError(hostId: string, hostDesc: string, what: string, err: unknown, notFound?: string): Error {
  if (err instanceof HttpError) return err;
  if (isConnectionError(err)) {
    const e = err as DockerishError;
    const reason = e.code === 'ETIMEDOUT' || !e.code ? engineMessage(err) : e.code;
    return new HostUnavailableError(
      hostId,
      `shared board ${hostDesc}: Docker engine unreachable while trying to ${what} (${reason})`,
      reason,
      err,
    );
  }
  const status = engineStatus(err);
  if (status === 404 && notFound) return Object.assign(new NotFoundError(notFound), { cause: err });
  return new EngineError(hostId, status, `shared board ${hostDesc}: could not ${what}: ${engineMessage(err)}`, err);
}
