import { Router } from 'express';
import { pipeline } from 'node:stream/promises';
import { HttpError, NotFoundError } from '../util/errors.js';
import type { ConsoleSessions } from './sessions.js';
import type { ConsoleAuthorize } from './ws-bridge.js';

/**
 * `GET /v1/leases/:id/console/log`: the lease's console log as raw bytes (application/octet-stream), oldest
 * first. Authorized by the same function as the WebSocket, so whoever may watch the console may read its log.
 */
export function consoleLogRouter(o: { sessions: ConsoleSessions; authorize: ConsoleAuthorize }): Router {
  const r = Router();
  r.get('/v1/leases/:id/console/log', async (req, res) => {
    const id = String(req.params.id);
    if (!/^Bearer\s+\S+$/i.test(req.get('authorization') ?? '')) throw new HttpError(401, 'missing bearer token (Authorization: Bearer <token>)');
    if (!(await o.authorize(req, 'lease', id))) throw new NotFoundError(`lease ${id}`);
    const stream = await o.sessions.leaseLog(id).catch((err) => {
      throw new HttpError(400, (err as Error).message, { cause: err });
    });
    if (!stream) throw new NotFoundError(`console log of lease ${id}`);
    res.set({ 'content-type': 'application/octet-stream', 'content-disposition': `inline; filename="${id}-console.log"`, 'cache-control': 'no-store' });
    await pipeline(stream, res).catch(() => {}); // a client that hangs up mid-download is not an error
  });
  return r;
}
