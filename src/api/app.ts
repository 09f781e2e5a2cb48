import { randomBytes } from 'node:crypto';
import express, { type ErrorRequestHandler, type Express, type Request, type RequestHandler, type Router } from 'express';
import type { Principal } from '../auth/tokens.js';
import type { ImageCatalog } from '../images/catalog.js';
import type { Inventory } from '../inventory/boards.js';
import type { BoardEvents } from '../inventory/events.js';
import type { Bus } from '../leases/bus.js';
import type { LeaseService } from '../leases/service.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import { HttpError, NotFoundError } from '../util/errors.js';
import { openapiDocument } from './openapi.js';
import type { Route } from './route.js';
import { boardRoutes } from './routes/boards.js';
import { leaseRoutes } from './routes/leases.js';
import { consoleRoutes } from './routes/consoles.js';
import type { ConsoleSessions } from '../console/index.js';
import { tenantRoutes } from './routes/tenants.js';
import { principalFrom, sessionRoutes } from './routes/session.js';
import { imageRoutes } from '../images/routes.js';
import type { ImageImporter } from '../images/import.js';
import { parseBody } from './validate.js';
import type { SharedBoardStatus } from '../shared-boards/index.js';

export interface ApiDeps {
  adminToken: string;
  store: Store;
  inventory: Inventory;
  events: BoardEvents;
  images: ImageCatalog;
  leases: LeaseService;
  bus: Bus;
  log: Logger;
  /** Numbers for /v1/health: protocol server counters and the like. */
  stats?: () => Record<string, unknown>;
  consoles?: ConsoleSessions;
  /** Image import and delete. */
  importer: ImageImporter;
  limits?: { eventStreamsPerToken: number };
  /** A shared board's engine state, shown with the board to admins (src/shared-boards). */
  sharedStatus?: (boardId: string) => SharedBoardStatus | undefined;
  /** More routes from other modules (image import), and routers mounted at the root (web UI). */
  extraRoutes?: Route[];
  routers?: Router[];
  /** The origin browsers reach the API at through a reverse proxy that rewrites Host (config publicOrigin). */
  publicOrigin?: string;
}

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
  }
}

/**
 * The caller's principal, for handlers outside the route table too (WebSocket upgrades use the same rule):
 * `Authorization: Bearer`, or the web UI's session cookie (unsafe methods: same-origin only; routes/session.ts).
 */
export function principalOf(store: Store, adminToken: string, req: Pick<Request, 'headers'> & { method?: string }, publicOrigin?: string): Principal {
  return principalFrom(store, adminToken, req, publicOrigin);
}

export function createApp(d: ApiDeps): Express {
  const app = express();
  app.disable('x-powered-by');

  const routes: Route[] = [
    { method: 'get', path: '/health', summary: 'Liveness and protocol counters', access: 'public', handler: () => ({ ok: true, ...(d.stats?.() ?? {}) }) },
    ...sessionRoutes(d),
    ...tenantRoutes(d),
    ...boardRoutes(d),
    ...imageRoutes({ catalog: d.images, importer: d.importer }),
    ...leaseRoutes(d),
    ...(d.consoles ? consoleRoutes({ store: d.store, consoles: d.consoles }) : []),
    ...(d.extraRoutes ?? []),
  ];
  const doc = openapiDocument(routes, '0.1.0');
  routes.push({ method: 'get', path: '/openapi.json', summary: 'This document', access: 'public', handler: () => doc });

  const v1 = express.Router();
  // The caller is authenticated before its body is read: an anonymous client cannot make us parse 1 MB.
  for (const r of routes) v1[r.method](r.path, authenticateFirst(r, d), express.json({ limit: '1mb' }), handle(r));
  app.use('/v1', v1);
  for (const router of d.routers ?? []) app.use(router);
  app.use((_req, _res, next) => next(new NotFoundError('route')));
  app.use(errorHandler(d.log));
  return app;
}

/** Authenticate and authorize by access level, before anything reads the body. */
function authenticateFirst(r: Route, d: ApiDeps): RequestHandler {
  return (req, _res, next) => {
    const p: Principal = r.access === 'public' ? { role: 'tenant', tenantId: null, tokenId: null } : principalOf(d.store, d.adminToken, req, d.publicOrigin);
    if (r.access === 'admin' && p.role !== 'admin') throw new HttpError(403, 'admin only');
    req.principal = p;
    next();
  };
}

/** Validate the body, run, answer. */
function handle(r: Route): RequestHandler {
  return async (req, res) => {
    const p = req.principal!;
    const body = r.body ? parseBody(r.body, req.body) : undefined;
    const params = Object.fromEntries(Object.entries(req.params).map(([k, v]) => [k, String(v)]));
    const out = await r.handler({ req, res, p, body, params });
    if (res.headersSent) return;
    if (out === undefined) res.status(r.status ?? 204).end();
    else res.status(r.status ?? 200).json(out);
  };
}

/** The one error handler: HttpErrors carry their status; body-parser errors are 400; anything else is a logged 500. */
function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    if (err instanceof HttpError) {
      res.status(err.status).json({ error: err.message, ...(err.details ? { details: err.details } : {}) });
      return;
    }
    if (err?.type === 'entity.parse.failed') {
      res.status(400).json({ error: `invalid JSON body: ${err.message}` });
      return;
    }
    if (typeof err?.status === 'number' && err.status >= 400 && err.status < 500) {
      res.status(err.status).json({ error: err.message });
      return;
    }
    // The caller gets an id to quote; the detail (command lines, paths) stays in the admin's log.
    const errorId = randomBytes(4).toString('hex');
    log.error({ err, errorId, method: req.method, url: req.originalUrl }, 'request failed');
    res.status(500).json({ error: `internal error (id ${errorId})`, errorId });
  };
}
