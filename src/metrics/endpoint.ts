import express, { Router, type Request, type Response } from 'express';
import type { Server as HttpServer } from 'node:http';
import { authenticate, bearerOf } from '../auth/tokens.js';
import type { Store } from '../store/store.js';
import { HttpError } from '../util/errors.js';
import type { Registry } from 'prom-client';

async function scrape(registry: Registry, res: Response): Promise<void> {
  res.set('content-type', registry.contentType).set('cache-control', 'no-store').send(await registry.metrics());
}

/**
 * `GET /metrics` on the API's own listener: operators only (the admin token or an admin-scoped token),
 * since the numbers describe every tenant's boards together.
 */
export function metricsRouter(registry: Registry, auth: { store: Store; adminToken: string }): Router {
  const r = Router();
  r.get('/metrics', (req: Request, res: Response, next) => {
    try {
      const p = authenticate(auth.store, auth.adminToken, bearerOf(req.headers.authorization));
      if (p.role !== 'admin') throw new HttpError(403, 'metrics are for operators');
    } catch (err) {
      return next(err);
    }
    scrape(registry, res).catch(next);
  });
  return r;
}

/**
 * `GET /metrics` on an address of its own (config `metrics.listen`) and nothing else, without a token:
 * for a scraper on a management network the operator chose; the API then does not serve it.
 */
export function serveMetricsAlone(registry: Registry, host: string, port: number): Promise<HttpServer> {
  const app = express();
  app.disable('x-powered-by');
  app.get('/metrics', (_req, res, next) => void scrape(registry, res).catch(next));
  app.use((_req, res) => void res.status(404).type('text').send('only /metrics here\n'));
  return new Promise((resolve, reject) => {
    const s = app.listen(port, host, () => resolve(s)).once('error', reject);
  });
}
