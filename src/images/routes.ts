import express, { type Request, type RequestHandler, type Response, type Router } from 'express';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { BadRequestError, HttpError, NotFoundError } from '../util/errors.js';
import type { Image, ImageCatalog, Manifest } from './catalog.js';
import { importSpecSchema, type ImageImporter, type ImportSpec } from './import.js';
import type { ImportJobView } from './import-jobs.js';

/**
 * The image API: catalog, import (a job), delete. Shaped like src/api/route.ts's `Route` (method,
 * path under /v1, access, body schema, handler) so the lead's route table can take it as is and
 * document it in OpenAPI; `imagesRouter` wraps the same handlers as a plain express Router.
 */
export interface ImageRoute {
  method: 'get' | 'post' | 'delete';
  path: string;
  summary: string;
  access: 'any' | 'admin';
  body?: z.ZodType;
  status?: number;
  handler: (ctx: { req: Request; res: Response; body: any; params: Record<string, string> }) => unknown;
}

export interface ImageApiDeps {
  catalog: ImageCatalog;
  importer: ImageImporter;
}

/** An image as the API shows it: its manifest, plus where it came from. */
/** An image as the caller may see it: where an import came from (a path on the server) is the admin's. */
export function imageView(i: Image, admin = true): Manifest & { builtIn: boolean } {
  const view = { ...i.manifest, builtIn: !i.manifest.imported };
  if (!admin && view.imported) view.imported = { ...view.imported, source: '(server)' };
  return view;
}

/** The API sets the caller before any route runs; the standalone router (imagesRouter) leaves access to its host. */
const isAdmin = (req: Request) => (req.principal ? req.principal.role === 'admin' : true);

const UPLOAD_TYPES = ['application/octet-stream', 'application/x-xz', 'application/gzip', 'application/zstd', 'application/x-qemu-disk'];
const truthy = (v: unknown) => v === '1' || v === 'true' || v === 'yes';

/**
 * The upload's import spec: the `X-Dozen-Import` header (the JSON of importSpecSchema without
 * `source`), or query parameters for the simple fields (`?name=&arch=&sha256=&format=&cmdline=&iscsiSyntax=`).
 */
export function uploadSpec(req: Request): ImportSpec {
  const header = req.headers['x-dozen-import'];
  let raw: unknown;
  if (typeof header === 'string' && header.trim()) {
    try {
      raw = JSON.parse(header);
    } catch (err) {
      throw new BadRequestError(`X-Dozen-Import is not JSON: ${(err as Error).message}`);
    }
  } else {
    const q = req.query as Record<string, unknown>;
    raw = Object.fromEntries(
      ['name', 'arch', 'sha256', 'format', 'cmdline', 'iscsiSyntax'].filter((k) => typeof q[k] === 'string').map((k) => [k, q[k]]),
    );
  }
  const parsed = importSpecSchema.safeParse(raw);
  if (!parsed.success) throw new BadRequestError(`invalid import: ${z.prettifyError(parsed.error)}`, parsed.error.issues);
  return parsed.data;
}

/**
 * POST /v1/images: JSON `{ name, source: { path }, ... }` imports a file on the server; any of
 * UPLOAD_TYPES as the content type makes the body the disk image. Answers 202 with the job
 * (Location: /v1/images/jobs/<id>) once the body is received; with `?wait=1`, when the import has
 * ended: 201 and the image, or the job's error status (400 bad input, 409 conflict).
 */
async function postImage(d: ImageApiDeps, req: Request, res: Response): Promise<unknown> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  let started;
  if (UPLOAD_TYPES.includes(type)) {
    try {
      const spec = uploadSpec(req);
      const length = req.headers['content-length'] !== undefined ? Number(req.headers['content-length']) : null;
      started = await d.importer.start(spec, { stream: req as Readable, length: Number.isFinite(length) ? length : null });
    } catch (err) {
      // Refused before reading the body (bad spec, name taken): don't read gigabytes to say so.
      res.setHeader('Connection', 'close');
      throw err;
    }
  } else if (type === 'application/json') {
    const parsed = importSpecSchema.safeParse(req.body);
    if (!parsed.success) throw new BadRequestError(`invalid import: ${z.prettifyError(parsed.error)}`, parsed.error.issues);
    started = await d.importer.start(parsed.data);
  } else {
    throw new HttpError(415, `send JSON (import a file on the server) or the disk image itself as ${UPLOAD_TYPES[0]}`);
  }
  const { job, received } = started;
  await received.catch(() => {}); // a failed upload is the job's failure, reported below
  if (truthy(req.query.wait) || job.view.state === 'failed') await job.done();
  const view = job.view;
  if (view.state === 'failed') throw new HttpError(view.error!.status, view.error!.message, { details: { job: view } });
  res.setHeader('Location', `/v1/images/jobs/${view.id}`);
  if (view.state === 'succeeded') {
    res.status(201).json(view.image);
    return undefined;
  }
  res.status(202).json(view);
  return undefined;
}

export function imageRoutes(d: ImageApiDeps): ImageRoute[] {
  return [
    {
      method: 'get',
      path: '/images',
      summary: 'List images (built in and imported)',
      access: 'any',
      handler: async ({ req }) => (await d.catalog.list()).map((i) => imageView(i, isAdmin(req))),
    },
    {
      method: 'get',
      path: '/images/jobs',
      summary: 'Image import jobs (running, and finished in the last hour)',
      access: 'admin',
      handler: (): ImportJobView[] => d.importer.jobs.list(),
    },
    {
      method: 'get',
      path: '/images/jobs/:id',
      summary: 'One import job: phase, bytes done/total, notes, error or the new image',
      access: 'admin',
      handler: ({ params }): ImportJobView => {
        const j = d.importer.jobs.get(params.id!);
        if (!j) throw new NotFoundError(`import job ${params.id}`);
        return j;
      },
    },
    {
      method: 'get',
      path: '/images/:name',
      summary: 'Show an image',
      access: 'any',
      handler: async ({ req, params }) => {
        const i = await d.catalog.get(params.name!);
        if (!i) throw new NotFoundError(`image ${params.name}`);
        return imageView(i, isAdmin(req));
      },
    },
    {
      method: 'post',
      path: '/images',
      summary: 'Import an image: JSON naming a file on the server, or the disk image as the body (X-Dozen-Import: spec). 202 + job; ?wait=1 → 201 + image',
      access: 'admin',
      // Validated in the handler: the body is JSON or a raw disk image, depending on Content-Type.
      status: 202,
      handler: ({ req, res }) => postImage(d, req, res),
    },
    {
      method: 'delete',
      path: '/images/:name',
      summary: 'Delete an imported image (409 while a board or lease uses it, or for built-in images)',
      access: 'admin',
      status: 204,
      handler: async ({ params }) => {
        await d.importer.delete(params.name!);
        return undefined;
      },
    },
  ];
}

export interface ImagesRouterOptions extends ImageApiDeps {
  /** Throws (an HttpError 401/403) unless the caller may change images; given by the API's auth. */
  requireAdmin: (req: Request) => void | Promise<void>;
  /** Throws unless the caller may read the catalog (any valid token); default: allow. */
  requireReader?: (req: Request) => void | Promise<void>;
}

/**
 * The same routes as an express Router with paths under /v1: `app.use(imagesRouter(...))`. An app-wide
 * express.json() does no harm: it only reads JSON bodies, so an upload reaches the handler untouched.
 */
export function imagesRouter(o: ImagesRouterOptions): Router {
  const r = express.Router();
  for (const route of imageRoutes(o)) {
    const h: RequestHandler = async (req, res, next) => {
      try {
        if (route.access === 'admin') await o.requireAdmin(req);
        else await o.requireReader?.(req);
        const params = Object.fromEntries(Object.entries(req.params).map(([k, v]) => [k, String(v)]));
        const out = await route.handler({ req, res, body: req.body, params });
        if (res.headersSent) return;
        if (out === undefined) res.status(route.status ?? 204).end();
        else res.status(route.status ?? 200).json(out);
      } catch (err) {
        next(err);
      }
    };
    r[route.method](`/v1${route.path}`, express.json({ limit: '1mb' }), h);
  }
  return r;
}
