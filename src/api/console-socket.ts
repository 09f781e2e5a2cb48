import type { Server } from 'node:http';
import { authz, type GrantBinding } from '../auth/authz.js';
import { attachConsoleWebSocket, type ConsoleSessions, type ConsoleWebSocket } from '../console/index.js';
import type { Bus } from '../leases/bus.js';
import type { Store } from '../store/store.js';
import { principalOf } from './app.js';

export interface LeaseConsoleSocketDeps {
  store: Store;
  adminToken: string;
  consoles: ConsoleSessions;
  bus: Bus;
  limits: { consolesPerToken: number; viewersPerConsole: number };
  /** A viewer with more than this unsent is dropped (the bridge's default when absent). */
  maxBufferedBytes?: number;
}

/**
 * The live consoles of the API: `/v1/leases/:id/console` and `/v1/boards/:id/console` on the API's HTTP
 * server, authorized by src/auth/authz.ts (the same rules as every route) and ended when their grant
 * does (release, reimage, failover, token revoked or expired). `?watch=1` joins watch-only: a viewer
 * who may type but wants no keystroke of theirs to reach the board (support sessions, a second screen).
 */
export function attachLeaseConsoles(http: Server, d: LeaseConsoleSocketDeps): ConsoleWebSocket {
  const ws = attachConsoleWebSocket(http, {
    sessions: d.consoles,
    authorize: async (req, kind, id) => authz.consoleGrant(d.store, principalOf(d.store, d.adminToken, req), kind, id, { watch: watchRequested(req.url) }),
    stillValid: (grant) => authz.grantEnded(d.store, grant.binding as GrantBinding),
    maxPerKey: d.limits.consolesPerToken,
    maxViewers: d.limits.viewersPerConsole,
    keyOf: (grant) => (grant.binding as GrantBinding).tokenId ?? 'bootstrap-admin',
    maxBufferedBytes: d.maxBufferedBytes,
  });
  // Lease events (release, reimage, failover) end grants at once rather than at the next periodic check.
  const off = d.bus.subscribe((ev) => ev.type === 'lease' && ws.recheck());
  return {
    ...ws,
    recheck: () => ws.recheck(),
    close: async () => {
      off();
      await ws.close();
    },
  };
}

/** `?watch=1` (or `true`, or a bare `?watch`) on the console URL. */
export function watchRequested(url: string | undefined): boolean {
  const v = new URL(url ?? '/', 'http://x').searchParams.get('watch');
  return v !== null && v !== '0' && v !== 'false';
}
