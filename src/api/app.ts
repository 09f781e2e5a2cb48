import express, { type ErrorRequestHandler, type Express } from 'express';
import type { Logger } from '../log.js';
import type { Inventory } from '../inventory/boards.js';
import { boardInputSchema, boardPatchSchema } from '../inventory/boards.js';
import type { BoardEvents } from '../inventory/events.js';
import type { ImageCatalog } from '../images/catalog.js';
import { HttpError, NotFoundError } from '../util/errors.js';
import { bearerAuth, requireAdmin } from './auth.js';
import { parseBody } from './validate.js';

export interface ApiDeps {
  adminToken: string;
  inventory: Inventory;
  events: BoardEvents;
  images: ImageCatalog;
  log: Logger;
  /** Numbers for /v1/health: protocol server counters and the like. */
  stats?: () => Record<string, unknown>;
}

export function createApp(d: ApiDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '1mb' }));

  app.get('/v1/health', (_req, res) => res.json({ ok: true, ...(d.stats?.() ?? {}) }));

  const v1 = express.Router();
  v1.use(bearerAuth(d.adminToken));

  v1.get('/boards', (_req, res) => res.json(d.inventory.list()));
  v1.post('/boards', requireAdmin(), async (req, res) => {
    res.status(201).json(await d.inventory.create(parseBody(boardInputSchema, req.body)));
  });
  v1.get('/boards/:id', (req, res) => res.json(d.inventory.get(String(req.params.id))));
  v1.patch('/boards/:id', requireAdmin(), async (req, res) => {
    res.json(await d.inventory.patch(String(req.params.id), parseBody(boardPatchSchema, req.body)));
  });
  v1.delete('/boards/:id', requireAdmin(), async (req, res) => {
    await d.inventory.remove(String(req.params.id));
    d.events.forget(String(req.params.id));
    res.status(204).end();
  });
  v1.get('/boards/:id/events', (req, res) => {
    d.inventory.get(String(req.params.id)); // 404 for unknown boards
    res.json(d.events.list(String(req.params.id)));
  });
  v1.get('/discovered', requireAdmin(), (_req, res) => res.json(d.inventory.discovered()));
  v1.get('/images', async (_req, res) => {
    res.json((await d.images.list()).map((i) => i.manifest));
  });

  app.use('/v1', v1);
  app.use((_req, _res, next) => next(new NotFoundError('route')));
  app.use(errorHandler(d.log));
  return app;
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
    log.error({ err, method: req.method, url: req.originalUrl }, 'request failed');
    res.status(500).json({ error: 'internal error' });
  };
}
