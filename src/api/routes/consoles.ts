import { pipeline } from 'node:stream/promises';
import { authz } from '../../auth/authz.js';
import type { ConsoleSessions } from '../../console/index.js';
import type { Store } from '../../store/store.js';
import { HttpError, NotFoundError } from '../../util/errors.js';
import { route, type Route } from '../route.js';

/**
 * Console routes. The live consoles are WebSockets (src/console/ws-bridge.ts answers the upgrade);
 * they are listed here too so the OpenAPI document and the authorization matrix cover them — a plain
 * GET is told to upgrade, after the same authorization check.
 */
export function consoleRoutes(d: { store: Store; consoles: ConsoleSessions }): Route[] {
  const upgrade = (kind: 'lease' | 'board') => ({ p, params }: { p: Parameters<typeof authz.consoleGrant>[1]; params: Record<string, string> }) => {
    if (!authz.consoleGrant(d.store, p, kind, params.id!)) throw new NotFoundError(`${kind} ${params.id}`);
    throw new HttpError(426, 'this is a WebSocket endpoint: connect with Upgrade: websocket (subprotocol dozen.console.v1)');
  };
  return [
    route({ method: 'get', path: '/leases/:id/console', summary: "WebSocket: the lease's live serial console (owner and admin may type)", access: 'any', handler: upgrade('lease') }),
    route({ method: 'get', path: '/boards/:id/console', summary: "WebSocket: a board's live serial console (admin)", access: 'admin', handler: upgrade('board') }),
    route({
      method: 'get',
      path: '/leases/:id/console/log',
      summary: "The lease's console log, oldest first (raw bytes)",
      access: 'any',
      handler: async ({ p, params, res }) => {
        authz.lease(d.store, p, params.id!);
        const stream = await d.consoles.leaseLog(params.id!);
        if (!stream) throw new NotFoundError(`console log of lease ${params.id}`);
        res.set({ 'content-type': 'application/octet-stream', 'cache-control': 'no-store' });
        await pipeline(stream, res).catch(() => {}); // a client that hangs up mid-download is not an error
      },
    }),
    route({
      method: 'get',
      path: '/consoles',
      summary: 'Every console line and its state (connected, reconnecting, viewers)',
      access: 'admin',
      handler: () => d.consoles.states(),
    }),
  ];
}
