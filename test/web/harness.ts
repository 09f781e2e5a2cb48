import express from 'express';
import { request, type IncomingMessage } from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { createApp } from '../../src/api/app.js';
import { healthDetailRoutes } from '../../src/api/health.js';
import { sshGatewayRoute } from '../../src/gateway/route.js';
import { ImageImporter } from '../../src/images/import.js';
import { log } from '../../src/log.js';
import { consoleWebRouter } from '../../src/web/router.js';
import { ADMIN } from '../helpers/api-harness.js';
import { startConsoleServer } from '../console/harness.js';

/**
 * The API as the server mounts it (web router included) over a real store, lease service and console
 * bridge (test/console/harness.ts): boards' power is the command `true`, so leases end in `error` once
 * their boot wait runs out — their consoles stay open, as for any lease not yet released.
 */
export function startWebServer(o: { onRequest?: (req: IncomingMessage) => void; publicOrigin?: string } = {}) {
  return startConsoleServer({
    publicOrigin: o.publicOrigin,
    app: (a) => withRecorder(o.onRequest, createApp({ adminToken: ADMIN, store: a.store, inventory: a.inventory, events: a.events, images: a.images, leases: a.leases, bus: a.bus, log, consoles: a.consoles, importer: new ImageImporter({ catalog: a.images, dir: mkdtempSync(join(tmpdir(), 'imported-')), log, inUse: () => null }), routers: [consoleWebRouter()], extraRoutes: [sshGatewayRoute(() => undefined), ...healthDetailRoutes({ storage: { dir: tmpdir(), driver: 'copy (the harness has no tgtd)', tgtdPid: () => process.pid }, network: () => ({ driver: 'none', boardIsolation: 'none', problems: [] }) })], publicOrigin: o.publicOrigin })),
  });
}

/** The app behind a middleware that shows each request to `onRequest` first (what the browser really sent). */
function withRecorder(onRequest: ((req: IncomingMessage) => void) | undefined, app: express.Express): express.Express {
  if (!onRequest) return app;
  const outer = express();
  outer.use((req, _res, next) => (onRequest(req), next()));
  outer.use(app);
  return outer;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

/** One HTTP request with exactly the headers given (node:http: no fetch adding or dropping Origin or Cookie). */
export function raw(base: string, method: string, path: string, o: { cookie?: string; origin?: string; bearer?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<RawResponse> {
  const url = new URL(path, base);
  const body = o.body === undefined ? undefined : JSON.stringify(o.body);
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (o.cookie) headers.cookie = o.cookie;
  if (o.origin) headers.origin = o.origin;
  if (o.bearer) headers.authorization = `Bearer ${o.bearer}`;
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown = text;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode!, headers: res.headers, body: json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The `name=value` of a Set-Cookie answer, for sending back. */
export function cookiePair(res: RawResponse): string {
  const sc = res.headers['set-cookie'];
  const first = Array.isArray(sc) ? sc[0] : sc;
  if (!first) throw new Error(`no Set-Cookie (status ${res.status})`);
  return first.split(';')[0]!;
}

/** Opens a console WebSocket with these headers; resolves 'open' or the refusal's status. */
export function wsAttempt(base: string, path: string, headers: Record<string, string>, protocols: string[] = ['dozen.console.v1']): Promise<{ open: true; ws: WebSocket } | { open: false; status: number }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base.replace(/^http/, 'ws') + path, protocols, { headers });
    ws.once('open', () => resolve({ open: true, ws }));
    ws.once('unexpected-response', (_req, res) => {
      ws.terminate();
      resolve({ open: false, status: res.statusCode ?? 0 });
    });
    ws.once('error', reject);
  });
}
