import type { IncomingMessage, Server } from 'node:http';
import { authz, type GrantBinding } from '../auth/authz.js';
import { attachConsoleWebSocket, type ConsoleSessions, type ConsoleWebSocket } from '../console/index.js';
import type { Bus } from '../leases/bus.js';
import type { Store } from '../store/store.js';
import { principalOf } from './app.js';
import { requireSameOrigin, sessionTokenOf } from './routes/session.js';
import { consoleToken } from '../console/ws-bridge.js';

export interface LeaseConsoleSocketDeps {
  store: Store;
  adminToken: string;
  consoles: ConsoleSessions;
  bus: Bus;
  limits: { consolesPerToken: number; viewersPerConsole: number };
  /** A viewer with more than this unsent is dropped (the bridge's default when absent). */
  maxBufferedBytes?: number;
  /** The origin browsers reach the API at through a reverse proxy that rewrites Host (config publicOrigin). */
  publicOrigin?: string;
}

/**
 * The live consoles of the API: `/v1/leases/:id/console` and `/v1/boards/:id/console` on the API's HTTP
 * server, authorized by src/auth/authz.ts (the same rules as every route) and ended when their grant
 * does (release, reimage, failover, token revoked or expired). `?watch=1` joins watch-only: a viewer
 * who may type but wants no keystroke of theirs to reach the board (support sessions, a second screen).
 */
export function attachLeaseConsoles(http: Server, d: LeaseConsoleSocketDeps): ConsoleWebSocket {
  // Upgrades authenticated by the web UI's session cookie: allowed only from our own origin (a page on
  // another origin opening a socket with the browser's cookie is cross-site WebSocket hijacking).
  const viaCookie = new WeakSet<IncomingMessage>();
  const before = new Set(http.listeners('upgrade'));
  const ws = attachConsoleWebSocket(http, {
    sessions: d.consoles,
    authorize: async (req, kind, id) => {
      if (viaCookie.has(req)) requireSameOrigin(req, 'console WebSocket', d.publicOrigin);
      return authz.consoleGrant(d.store, principalOf(d.store, d.adminToken, req, d.publicOrigin), kind, id, { watch: watchRequested(req.url) });
    },
    stillValid: (grant) => authz.grantEnded(d.store, grant.binding as GrantBinding),
    maxPerKey: d.limits.consolesPerToken,
    maxViewers: d.limits.viewersPerConsole,
    keyOf: (grant) => (grant.binding as GrantBinding).tokenId ?? 'bootstrap-admin',
    maxBufferedBytes: d.maxBufferedBytes,
  });
  // The bridge reads a bearer token only (header or subprotocol): a cookie-only upgrade gets the cookie's
  // token as its bearer, remembered as cookie-borne so authorize() checks its Origin. The bridge's own
  // upgrade listener is wrapped, not joined by a second one (it refuses foreign paths when it is alone).
  const bridgeListeners = http.listeners('upgrade').filter((l) => !before.has(l)) as Array<(req: IncomingMessage, ...rest: unknown[]) => void>;
  const wrapped = bridgeListeners.map((l) => {
    const w = (req: IncomingMessage, ...rest: unknown[]) => {
      const isConsole = CONSOLE_PATH.test((req.url ?? '').split('?')[0]!);
      const cookie = isConsole && consoleToken(req) === undefined ? sessionTokenOf(req.headers) : undefined;
      if (cookie !== undefined) {
        req.headers.authorization = `Bearer ${cookie}`;
        viaCookie.add(req);
      }
      l(req, ...rest);
    };
    http.off('upgrade', l);
    http.on('upgrade', w);
    return { l, w };
  });
  // Lease events (release, reimage, failover) end grants at once rather than at the next periodic check.
  const off = d.bus.subscribe((ev) => ev.type === 'lease' && ws.recheck());
  return {
    ...ws,
    recheck: () => ws.recheck(),
    close: async () => {
      off();
      for (const { w } of wrapped) http.off('upgrade', w);
      await ws.close();
    },
  };
}

/** The console endpoints' paths (src/console/ws-bridge.ts serves them): only their upgrades take the session cookie. */
const CONSOLE_PATH = /^\/v1\/(leases|boards)\/[^/]+\/console\/?$/;

/** `?watch=1` (or `true`, or a bare `?watch`) on the console URL. */
export function watchRequested(url: string | undefined): boolean {
  const v = new URL(url ?? '/', 'http://x').searchParams.get('watch');
  return v !== null && v !== '0' && v !== 'false';
}
