import express from 'express';
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { consoleLogRouter } from '../../src/console/log-route.js';
import { SUBPROTOCOL, type ServerMessage } from '../../src/console/protocol.js';
import { ConsoleSessions, type ConsoleSessionsOptions } from '../../src/console/sessions.js';
import { attachConsoleWebSocket, consoleToken, type ConsoleAuthorize, type ConsoleGrant, type ConsoleWebSocket } from '../../src/console/ws-bridge.js';
import { HttpError } from '../../src/util/errors.js';
import { OutputWatcher } from '../../src/util/wait-for.js';

/** Tokens of the test's authorize(): what each may open. Anything else is refused (null → 404). */
export interface Grants {
  [token: string]: { leases?: Record<string, ConsoleGrant>; boards?: Record<string, ConsoleGrant> };
}

export function tableAuthorize(grants: Grants): ConsoleAuthorize {
  return async (req, kind, id) => {
    const token = consoleToken(req);
    if (token === 'forbidden-token') throw new HttpError(403, 'this token may not open consoles');
    const g = token ? grants[token] : undefined;
    return (kind === 'lease' ? g?.leases?.[id] : g?.boards?.[id]) ?? null;
  };
}

/** Real console sessions + the WebSocket bridge + the log route on a loopback HTTP server. */
export async function startConsoleServer(grants: Grants, o: Partial<ConsoleSessionsOptions> & { maxBufferedBytes?: number; app?: express.Express } = {}) {
  const dataDir = o.dataDir ?? mkdtempSync(join(tmpdir(), 'console-'));
  const sessions = new ConsoleSessions({ backoff: { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.1 }, ...o, dataDir });
  const authorize = tableAuthorize(grants);
  const app = o.app ?? express();
  app.use(consoleLogRouter({ sessions, authorize }));
  app.use(((err, _req, res, _next) => res.status(err.status ?? 500).json({ error: err.message })) as express.ErrorRequestHandler);
  const http: Server = createServer(app);
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const bridge: ConsoleWebSocket = attachConsoleWebSocket(http, { sessions, authorize, maxBufferedBytes: o.maxBufferedBytes });
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  return {
    bridge,
    sessions,
    http,
    url,
    dataDir,
    async stop() {
      await bridge.close();
      await sessions.close();
      http.closeAllConnections();
      await new Promise((r) => http.close(r));
    },
  };
}

export interface TestViewer {
  ws: WebSocket;
  /** Every binary byte received, in order. */
  bytes(): Buffer;
  /** How many binary bytes have arrived (cheap, unlike bytes().length). */
  count(): number;
  /** Stop keeping bytes (floods): only count() and the hash go on. */
  discard(): void;
  /** sha256 of the bytes received since discard(). */
  hash(): string;
  messages: ServerMessage[];
  out: OutputWatcher;
  waitMessage(pred: (m: ServerMessage) => boolean, timeoutMs: number, what: string): Promise<ServerMessage>;
  closed: Promise<{ code: number; reason: string }>;
  type(s: string, delayMs?: number): Promise<void>;
}

/** A WebSocket viewer; `auth` picks how the token travels (header for CLIs, subprotocol for browsers). */
export function openViewer(base: string, path: string, token: string | undefined, auth: 'header' | 'subprotocol' = 'header'): Promise<TestViewer> {
  const url = base.replace(/^http/, 'ws') + path;
  const protocols = auth === 'subprotocol' && token ? [SUBPROTOCOL, `bearer.${token}`] : [SUBPROTOCOL];
  const ws = new WebSocket(url, protocols, auth === 'header' && token ? { headers: { authorization: `Bearer ${token}` } } : {});
  let chunks: Buffer[] = [];
  let received = 0;
  let keep = true;
  const hasher = createHash('sha256');
  const messages: ServerMessage[] = [];
  const em = new EventEmitter();
  const out = new OutputWatcher(em, 4 << 20);
  const msgWaiters = new Set<() => void>();
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      received += (data as Buffer).length;
      if (!keep) return void hasher.update(data as Buffer);
      chunks.push(data as Buffer);
      em.emit('data', data);
    } else {
      messages.push(JSON.parse(String(data)));
      for (const w of msgWaiters) w();
    }
  });
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.on('close', (code, reason) => r({ code, reason: String(reason) })));
  const v: TestViewer = {
    ws,
    bytes: () => Buffer.concat(chunks),
    count: () => received,
    discard() {
      keep = false;
      chunks = [];
    },
    hash: () => hasher.copy().digest('hex'),
    messages,
    out,
    closed,
    waitMessage(pred, timeoutMs, what) {
      return new Promise((resolve, reject) => {
        let seen = 0;
        const check = () => {
          for (; seen < messages.length; seen++) {
            if (pred(messages[seen]!)) {
              done();
              return resolve(messages[seen]!);
            }
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no ${what} within ${timeoutMs} ms; messages: ${JSON.stringify(messages.slice(-8))}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          msgWaiters.delete(check);
        };
        msgWaiters.add(check);
        check();
      });
    },
    async type(s, delayMs = 0) {
      if (!delayMs) return void ws.send(Buffer.from(s));
      for (const ch of s) {
        ws.send(Buffer.from(ch));
        await new Promise((r) => setTimeout(r, delayMs));
      }
    },
  };
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(v));
    ws.once('unexpected-response', (_req, res) => {
      ws.terminate();
      reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode }));
    });
    ws.once('error', reject);
  });
}

export async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
