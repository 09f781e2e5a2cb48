import { Router, type Response } from 'express';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const xtermLib = require.resolve('@xterm/xterm'); // …/@xterm/xterm/lib/xterm.js, the prebuilt UMD bundle
const fitLib = require.resolve('@xterm/addon-fit');

// The page talks only to its own origin; xterm.js sets inline styles on its elements.
const CSP = "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'";

/** The lease page (`/leases/:id`) and its static assets under `/assets/`: plain files, no bundler. */
export function consoleWebRouter(): Router {
  const r = Router();
  const file = (path: string, type: string) => (_req: unknown, res: Response) => {
    res.type(type).set('cache-control', 'no-cache').sendFile(path);
  };
  r.get('/leases/:id', (_req, res) => {
    res.set('content-security-policy', CSP).set('x-content-type-options', 'nosniff');
    file(join(here, 'static/lease.html'), 'html')(_req, res);
  });
  r.get('/assets/xterm.js', file(xtermLib, 'js'));
  r.get('/assets/xterm.css', file(join(dirname(xtermLib), '../css/xterm.css'), 'css'));
  r.get('/assets/addon-fit.js', file(fitLib, 'js'));
  r.get('/assets/lease.js', file(join(here, 'static/lease.js'), 'js'));
  r.get('/assets/lease.css', file(join(here, 'static/lease.css'), 'css'));
  return r;
}
