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
// The web UI: scripts and connections to this origin only (CSP 3: 'self' covers ws/wss to it), no plugins,
// no <base>, forms post here only.
const APP_CSP = "default-src 'self'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** The web UI's ES modules, by name: only these are served (no directory listing, no path games). */
export const APP_MODULES = ['main.js', 'api.js', 'dom.js', 'console.js', 'tenant.js', 'admin.js'] as const;

/**
 * The web UI (`/`, its modules under `/app/`), the lease page (`/leases/:id`) and their static assets under
 * `/assets/`: plain files, no bundler.
 */
export function consoleWebRouter(): Router {
  const r = Router();
  const file = (path: string, type: string) => (_req: unknown, res: Response) => {
    res.type(type).set('cache-control', 'no-cache').set('x-content-type-options', 'nosniff').sendFile(path);
  };
  const page = (path: string, csp: string) => (_req: unknown, res: Response) => {
    res.set('content-security-policy', csp).set('x-content-type-options', 'nosniff').set('referrer-policy', 'no-referrer');
    file(path, 'html')(_req, res);
  };
  r.get('/', page(join(here, 'static/app/index.html'), APP_CSP));
  r.get('/leases/:id', page(join(here, 'static/lease.html'), CSP));
  for (const m of APP_MODULES) r.get(`/app/${m}`, file(join(here, 'static/app', m), 'js'));
  r.get('/app/app.css', file(join(here, 'static/app/app.css'), 'css'));
  r.get('/assets/xterm.js', file(xtermLib, 'js'));
  r.get('/assets/xterm.css', file(join(dirname(xtermLib), '../css/xterm.css'), 'css'));
  r.get('/assets/addon-fit.js', file(fitLib, 'js'));
  r.get('/assets/lease.js', file(join(here, 'static/lease.js'), 'js'));
  r.get('/assets/lease.css', file(join(here, 'static/lease.css'), 'css'));
  return r;
}
