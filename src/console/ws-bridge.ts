import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { log } from '../log.js';
import { BEARER_PREFIX, CLOSE, SUBPROTOCOL, parseClientMessage, type ServerMessage } from './protocol.js';
import type { Viewer } from './session.js';
import type { ConsoleSessions } from './sessions.js';

export type ConsoleKind = 'lease' | 'board';

export interface ConsoleGrant {
  boardId: string;
  canType: boolean;
  /** Shown to the other viewers ("alice is typing"). */
  who: string;
  /**
   * What the grant was given for (lease, its boot, the token), opaque to the bridge: `stillValid` is asked
   * about it while the socket is open, and the socket is closed as soon as the answer is no.
   */
  binding?: unknown;
  /** The operator's view: where the line is (device path, serial server) and why it is down. Tenants get neither. */
  detail?: boolean;
}

/**
 * Decides who may open which console. Return null for "no such lease/board, or not yours" (answered 404,
 * so a stranger learns nothing); throw an error with a numeric `status` (e.g. HttpError 403) to answer
 * that status. The token is in `Authorization: Bearer` — also when the browser sent it as a subprotocol,
 * because the bridge copies it there — so the API's bearer code can be reused as is.
 */
export type ConsoleAuthorize = (req: IncomingMessage, kind: ConsoleKind, id: string) => Promise<ConsoleGrant | null>;

export interface ConsoleWebSocketOptions {
  sessions: ConsoleSessions;
  authorize: ConsoleAuthorize;
  /** A viewer with more than this unsent is dropped with a notice (default 1 MiB). */
  maxBufferedBytes?: number;
  /** Ping interval; a viewer that misses a pong is dropped (default 30 s). */
  pingMs?: number;
  /**
   * Whether an open socket's grant still holds (lease not released or reimaged, token not revoked or
   * expired). Asked every `recheckMs` (default 250 ms) and on `recheck()`; a null answer keeps the socket,
   * a string closes it with that reason.
   */
  stillValid?: (grant: ConsoleGrant) => string | null;
  recheckMs?: number;
  /** At most this many open sockets per `keyOf(grant)` (a token); more are refused with 429. */
  maxPerKey?: number;
  /** At most this many viewers of one console (each join is announced to all, in one small message). */
  maxViewers?: number;
  keyOf?: (grant: ConsoleGrant) => string;
}

export interface ConsoleWebSocket {
  /** Open console sockets and the bytes queued for them: the memory the per-viewer bound keeps in check. */
  stats(): { sockets: number; bufferedBytes: number; maxBufferedBytes: number; dropped: number; revoked: number };
  /** Ask `stillValid` about every open socket now (the server calls it on lease and token changes). */
  recheck(): void;
  close(): Promise<void>;
}

const PATH = /^\/v1\/(leases|boards)\/([^/]+)\/console\/?$/;

/** The bearer token of a request: the Authorization header, or the browser's `bearer.<token>` subprotocol. */
export function consoleToken(req: IncomingMessage): string | undefined {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (m) return m[1];
  const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim());
  return offered.find((p) => p.startsWith(BEARER_PREFIX))?.slice(BEARER_PREFIX.length) || undefined;
}

/**
 * Serves `/v1/leases/:id/console` and `/v1/boards/:id/console` on an HTTP server's upgrade event.
 * Authorization happens before the upgrade, so a refused client gets a plain HTTP status and no socket.
 */
export function attachConsoleWebSocket(http: HttpServer, o: ConsoleWebSocketOptions): ConsoleWebSocket {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: 64 * 1024,
    handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
  });
  const maxBuffered = o.maxBufferedBytes ?? 1 << 20;
  let droppedCount = 0;

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {}); // a client that resets mid-upgrade is its own problem, not the process's
    const url = new URL(req.url ?? '/', 'http://x');
    const m = PATH.exec(url.pathname);
    if (!m) {
      // Not ours: leave it to another upgrade handler, or refuse it if there is none.
      if (http.listenerCount('upgrade') === 1) refuse(socket, 404, 'no such WebSocket endpoint');
      return;
    }
    // Every upgrade is hostile until parsed: an exception here is a refused socket, never a crashed server.
    void (async () => {
      const kind: 'lease' | 'board' = m[1] === 'leases' ? 'lease' : 'board';
      const id = safeDecode(m[2]!);
      if (id === null) return refuse(socket, 400, 'malformed percent-encoding in the path');
      const token = consoleToken(req);
      if (!token) return refuse(socket, 401, 'missing bearer token (Authorization header or bearer.<token> subprotocol)');
      req.headers.authorization = `Bearer ${token}`;
      let grant: ConsoleGrant | null;
      try {
        grant = await o.authorize(req, kind, id);
      } catch (err) {
        const status = (err as { status?: number }).status;
        if (!status) log.error({ err, kind, id }, 'console authorization failed');
        return refuse(socket, status ?? 500, status ? (err as Error).message : 'internal error');
      }
      if (!grant) return refuse(socket, 404, `${kind} ${id} not found`);
      const session = o.sessions.get(grant.boardId);
      if (!session) return refuse(socket, 404, `board ${grant.boardId} has no console line`);
      const invalid = o.stillValid?.(grant);
      if (invalid) return refuse(socket, 404, `${kind} ${id} not found`);
      if (o.maxViewers !== undefined && session.viewerList().length >= o.maxViewers) {
        return refuse(socket, 429, `this console has ${o.maxViewers} viewers already`);
      }
      const key = o.keyOf?.(grant);
      if (key !== undefined && o.maxPerKey !== undefined && [...open.values()].filter((x) => x.key === key).length >= o.maxPerKey) {
        return refuse(socket, 429, `too many open consoles for this token (at most ${o.maxPerKey})`);
      }
      wss.handleUpgrade(req, socket, head, (ws) => bridge(ws, grant, key));
    })().catch((err) => {
      log.error({ err }, 'console upgrade failed');
      if (!socket.destroyed) refuse(socket, 500, 'internal error');
    });
  };

  // Sockets by the grant they were opened with, so a grant that ends closes its sockets.
  const open = new Map<WebSocket, { grant: ConsoleGrant; key?: string; end: (reason: string) => void }>();
  let revokedCount = 0;
  const recheck = () => {
    if (!o.stillValid) return;
    for (const [ws, { grant, end }] of open) {
      let reason: string | null;
      try {
        reason = o.stillValid(grant);
      } catch (err) {
        log.error({ err }, 'console grant check failed');
        reason = 'access could not be checked';
      }
      if (reason === null) continue;
      open.delete(ws);
      revokedCount++;
      end(reason);
    }
  };
  const rechecker = o.stillValid ? setInterval(recheck, o.recheckMs ?? 250) : undefined;
  rechecker?.unref();

  const bridge = (ws: WebSocket, grant: ConsoleGrant, key?: string) => {
    const session = o.sessions.get(grant.boardId);
    if (!session) return ws.close(CLOSE.gone, 'console gone');
    let dropped = false;
    let alive = true;
    // A tenant's view of the line's state: up or down, never the server's device path or its errors.
    const view = (msg: ServerMessage): ServerMessage =>
      grant.detail || msg.type !== 'state' ? msg : { ...msg, target: 'serial console', ...(msg.lastError ? { lastError: 'the line is down' } : {}) };
    const sendJson = (msg: ServerMessage) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(view(msg)));
    const viewer: Viewer = {
      who: grant.who,
      canType: grant.canType,
      send(chunk) {
        if (dropped || ws.readyState !== ws.OPEN) return;
        // Bounded per-viewer queue: what ws has not yet handed to the kernel. Past the bound the viewer is
        // dropped, never waited for, so one stalled laptop cannot grow our memory or slow the others.
        if (ws.bufferedAmount > maxBuffered) return drop();
        ws.send(chunk);
      },
      notify: (msg) => !dropped && sendJson(msg),
      end(reason) {
        sendJson({ type: 'info', event: 'error', message: `console closed: ${reason}` });
        ws.close(CLOSE.gone, reason.slice(0, 100));
      },
    };
    const drop = () => {
      dropped = true;
      droppedCount++;
      session.detach(viewer);
      sendJson({ type: 'info', event: 'slow', message: `disconnected: more than ${maxBuffered} bytes of console output unread; reconnect to resume (scrollback is replayed)` });
      ws.close(CLOSE.tooSlow, 'too slow');
      setTimeout(() => ws.terminate(), 5000).unref(); // the close frame waits behind the backlog
    };

    sendJson({
      type: 'info',
      event: 'hello',
      message: `console of ${grant.boardId}${grant.canType ? '' : ' (watch only)'}`,
      board: grant.boardId,
      who: grant.who,
      canType: grant.canType,
      viewers: session.viewerList(),
    });
    sendJson({ type: 'state', ...session.state() });
    const scrollback = session.attach(viewer);
    if (scrollback.length) ws.send(scrollback);
    open.set(ws, {
      grant,
      key,
      end: (reason) => {
        session.detach(viewer);
        sendJson({ type: 'info', event: 'error', message: `console closed: ${reason}` });
        ws.close(CLOSE.revoked, reason.slice(0, 100));
        setTimeout(() => ws.terminate(), 2000).unref();
      },
    });

    ws.on('message', (data, isBinary) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (isBinary) return void session.write(viewer, buf);
      const msg = parseClientMessage(buf.toString('utf8'));
      if (!msg) return void sendJson({ type: 'info', event: 'error', message: 'unknown control message (expected {"type":"break"} or {"type":"resize",...})' });
      if (msg.type === 'break') void session.sendBreak(viewer);
      // resize: a serial line has no window size to set; accepted so terminals can send it unconditionally.
    });
    ws.on('pong', () => (alive = true));
    const ping = setInterval(() => {
      if (!alive) return ws.terminate();
      alive = false;
      ws.ping();
    }, o.pingMs ?? 30_000);
    ws.on('close', () => {
      clearInterval(ping);
      open.delete(ws);
      session.detach(viewer);
    });
    ws.on('error', () => {});
  };

  http.on('upgrade', onUpgrade);
  return {
    stats() {
      let bufferedBytes = 0;
      for (const ws of wss.clients) bufferedBytes += ws.bufferedAmount;
      return { sockets: wss.clients.size, bufferedBytes, maxBufferedBytes: maxBuffered, dropped: droppedCount, revoked: revokedCount };
    },
    recheck,
    async close() {
      clearInterval(rechecker);
      http.off('upgrade', onUpgrade);
      for (const ws of wss.clients) ws.close(CLOSE.gone, 'server stopping');
      await new Promise<void>((r) => wss.close(() => r()));
      for (const ws of wss.clients) ws.terminate();
    },
  };
}

function safeDecode(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

function refuse(socket: Duplex, status: number, message: string): void {
  const body = JSON.stringify({ error: message });
  const reason = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 500: 'Internal Server Error' }[status] ?? 'Error';
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}
