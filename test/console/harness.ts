import express from 'express';
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { attachLeaseConsoles } from '../../src/api/console-socket.js';
import { SUBPROTOCOL, type ServerMessage } from '../../src/console/protocol.js';
import type { ConsoleSessionsOptions } from '../../src/console/sessions.js';
import { ADMIN, apiHarness } from '../helpers/api-harness.js';
import { OutputWatcher } from '../../src/util/wait-for.js';

let boardSeq = 0;

/**
 * The API's real console wiring on a loopback server: real store, tenants, tokens and leases (through the
 * API), the WebSocket bridge attached by src/api/console-socket.ts and authorized by src/auth/authz.ts, and
 * the API's own console log route. Only the boards' power is a command (`true`): nothing boots, so leases
 * end in `error` — which keeps their consoles open, as for any lease not yet released.
 */
export async function startConsoleServer(o: Partial<ConsoleSessionsOptions> & { maxBufferedBytes?: number; publicOrigin?: string; app?: (api: ApiHarness) => express.Express } = {}) {
  const { maxBufferedBytes, publicOrigin, app: makeApp, ...sessionOpts } = o;
  const dataDir = o.dataDir ?? mkdtempSync(join(tmpdir(), 'console-'));
  const api = await apiHarness({ timeouts: { actionMs: 2000, bootMs: 150, osMs: 150 } }, {
    consoles: { backoff: { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.1 }, ...sessionOpts, dataDir },
  });
  // A custom app (the browser test's web router) gets its own listener; the default is the harness's.
  let http: Server = api.server;
  if (makeApp) {
    http = createServer(makeApp(api));
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  }
  const bridge = attachLeaseConsoles(http, { store: api.store, adminToken: ADMIN, consoles: api.consoles, bus: api.bus, limits: { consolesPerToken: 16, viewersPerConsole: 32 }, maxBufferedBytes, publicOrigin });
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  return {
    api,
    bridge,
    sessions: api.consoles,
    url,
    dataDir,
    admin: ADMIN,
    /** A tenant and its token. */
    async tenant(id: string): Promise<string> {
      const r = await api.api('POST', '/tenants', { id, name: id });
      if (r.status !== 201) throw new Error(`POST /tenants ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.token as string;
    },
    /** Enrolls board `boardId` (its power a no-op command). */
    async board(boardId: string): Promise<void> {
      const n = ++boardSeq;
      const power = { driver: 'command', on: 'true', off: 'true', cycle: 'true' };
      const mac = `02:00:00:00:08:${n.toString(16).padStart(2, '0')}`;
      const b = await api.api('POST', '/boards', { id: boardId, mac, model: 'bananapi', arch: 'armv7', ip: `10.77.0.${100 + n}`, power, image: 'test' });
      if (b.status !== 201) throw new Error(`POST /boards ${boardId}: ${b.status} ${JSON.stringify(b.body)}`);
    },
    /** Leases board `boardId` to the tenant of `token`; resolves with the lease id once its job has run. */
    async lease(boardId: string, token: string): Promise<string> {
      const l = await api.api('POST', '/leases', { image: 'test', board: boardId }, token);
      if (l.status !== 202) throw new Error(`POST /leases on ${boardId}: ${l.status} ${JSON.stringify(l.body)}`);
      await api.leases.settle(l.body.job.id);
      return l.body.lease.id as string;
    },
    /** Releases a lease through the API, as its tenant does; resolves when the release job has run. */
    async release(leaseId: string, token: string): Promise<void> {
      const r = await api.api('DELETE', `/leases/${leaseId}`, undefined, token);
      if (r.status !== 202) throw new Error(`DELETE /leases/${leaseId}: ${r.status} ${JSON.stringify(r.body)}`);
      await api.leases.settle(r.body.job.id);
    },
    async boardLease(boardId: string, token: string): Promise<string> {
      await this.board(boardId);
      return this.lease(boardId, token);
    },
    async stop() {
      await bridge.close();
      if (http !== api.server) {
        http.closeAllConnections();
        await new Promise((r) => http.close(r));
      }
      await api.close();
    },
  };
}
export type ConsoleServer = Awaited<ReturnType<typeof startConsoleServer>>;

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
  /** With `delayMs`, one character at a time that far apart: a paced typist for an emulated UART's tiny FIFO. */
  type(s: string, delayMs?: number): Promise<void>;
}

/** A WebSocket viewer; `auth` picks how the token travels (header for CLIs, subprotocol for browsers). */
type ApiHarness = Awaited<ReturnType<typeof apiHarness>>;

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
