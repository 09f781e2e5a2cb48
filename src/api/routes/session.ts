import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Request, Response } from 'express';
import { z } from 'zod';
import { authenticate, type Principal } from '../../auth/tokens.js';
import type { Store } from '../../store/store.js';
import { HttpError } from '../../util/errors.js';
import { route, type Route } from '../route.js';

/**
 * Browser sessions. The web UI signs in with a token once (`POST /v1/session`); the token then lives in an
 * HttpOnly, SameSite=Strict cookie — never in a URL, localStorage or sessionStorage, and out of reach of the
 * page's scripts. The API takes the cookie where it takes `Authorization: Bearer`, with one more rule: a
 * request authenticated by the cookie that changes something (POST, PATCH, DELETE) or opens a console
 * WebSocket must carry an `Origin` equal to the API's own. SameSite keeps the cookie off other sites'
 * requests; the Origin check covers what SameSite does not (another port of the same host is the same site).
 * The cookie holds the token itself: revoking or expiring the token ends the session at once, and a
 * restart of the server keeps it.
 */
export const SESSION_COOKIE = 'dozen_session';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const sessionInput = z.object({ token: z.string().min(1).max(512) }).strict();

type Headers = IncomingMessage['headers'];
type Req = { headers: Headers; method?: string; socket?: IncomingMessage['socket'] };

/** The session cookie's token, if the request carries one. */
export function sessionTokenOf(headers: Headers): string | undefined {
  for (const part of (headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i < 0 || part.slice(0, i).trim() !== SESSION_COOKIE) continue;
    const v = part.slice(i + 1).trim();
    try {
      return decodeURIComponent(v) || undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** Whether the request came over TLS (directly, or through a proxy that says so). */
function isHttps(req: Req): boolean {
  if ((req.socket as TLSSocket | undefined)?.encrypted) return true;
  return String(req.headers['x-forwarded-proto'] ?? '').split(',')[0]!.trim() === 'https';
}

/** The request's own origin, `http(s)://<Host>`. */
export function ownOrigin(req: Req): string | undefined {
  const host = req.headers.host;
  return host ? `${isHttps(req) ? 'https' : 'http'}://${host}` : undefined;
}

/**
 * True when the request's `Origin` header is present and equal to the request's own origin, or to the
 * configured `publicOrigin`: behind a reverse proxy that rewrites Host, the browser's origin (the
 * proxy's) is not the one the request arrives with, and only the operator can say which it is.
 */
export function sameOrigin(req: Req, publicOrigin?: string): boolean {
  const origin = req.headers.origin;
  if (typeof origin !== 'string') return false;
  const own = ownOrigin(req);
  return (own !== undefined && origin.toLowerCase() === own.toLowerCase()) || (publicOrigin !== undefined && origin.toLowerCase() === publicOrigin.toLowerCase());
}

/** Unsafe methods with the cookie, and WebSocket upgrades, need a same-origin `Origin`. */
export function requireSameOrigin(req: Req, what = 'this request', publicOrigin?: string): void {
  if (!sameOrigin(req, publicOrigin)) throw new HttpError(403, `cross-origin ${what} refused: with the session cookie, Origin must be this site's own${publicOrigin ? ` (${publicOrigin})` : ''}`);
}

/**
 * The caller's principal: `Authorization: Bearer` as ever; without that header, the session cookie (and,
 * for unsafe methods, a same-origin Origin). Neither: the bearer code's 401.
 */
export function principalFrom(store: Store, adminToken: string, req: Req, publicOrigin?: string): Principal {
  const cookie = req.headers.authorization === undefined ? sessionTokenOf(req.headers) : undefined;
  if (cookie === undefined) return authenticate(store, adminToken, /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1]);
  if (req.method && !SAFE_METHODS.has(req.method.toUpperCase())) requireSameOrigin(req, 'this request', publicOrigin);
  return authenticate(store, adminToken, cookie);
}

function cookie(req: Request, value: string, o: { expires?: Date; clear?: boolean; publicOrigin?: string }): string {
  const parts = [`${SESSION_COOKIE}=${o.clear ? '' : encodeURIComponent(value)}`, 'Path=/', 'HttpOnly', 'SameSite=Strict'];
  if (isHttps(req) || o.publicOrigin?.toLowerCase().startsWith('https:')) parts.push('Secure');
  if (o.clear) parts.push('Max-Age=0', 'Expires=Thu, 01 Jan 1970 00:00:00 GMT');
  else if (o.expires) parts.push(`Expires=${o.expires.toUTCString()}`);
  return parts.join('; ');
}

const noStore = (res: Response) => res.set('cache-control', 'no-store');

/**
 * `POST /v1/session {token}`: checks the token and sets the cookie; `DELETE /v1/session` clears it. Both
 * are public (the token is the credential being presented), and both refuse a foreign Origin, so another
 * site cannot sign a browser in as someone else (login CSRF) or out.
 */
export function sessionRoutes(d: { store: Store; adminToken: string; publicOrigin?: string }): Route[] {
  return [
    route({
      method: 'get',
      path: '/session',
      summary: "Whether this browser's session cookie signs it in (never a 401: the sign-in page asks this first)",
      access: 'public',
      handler: ({ req, res }) => {
        noStore(res);
        const token = sessionTokenOf(req.headers);
        if (token === undefined) return { signedIn: false };
        try {
          const p = authenticate(d.store, d.adminToken, token);
          return { signedIn: true, role: p.role, tenant: p.tenantId, token: p.tokenId };
        } catch (err) {
          return { signedIn: false, reason: (err as Error).message };
        }
      },
    }),
    route({
      method: 'post',
      path: '/session',
      summary: 'Sign a browser in: checks the token and sets an HttpOnly, SameSite=Strict session cookie (the web UI)',
      access: 'public',
      body: sessionInput,
      handler: ({ req, res, body }) => {
        if (req.headers.origin !== undefined) requireSameOrigin(req, 'sign-in', d.publicOrigin);
        const p = authenticate(d.store, d.adminToken, body.token); // 401 with the reason; the token is never logged
        const rec = p.tokenId ? d.store.state.tokens.find((t) => t.id === p.tokenId) : undefined;
        noStore(res).append('set-cookie', cookie(req, body.token, { expires: rec?.expiresAt ? new Date(rec.expiresAt) : undefined, publicOrigin: d.publicOrigin }));
        return { role: p.role, tenant: p.tenantId, token: p.tokenId };
      },
    }),
    route({
      method: 'delete',
      path: '/session',
      summary: 'Sign the browser out: clears the session cookie',
      access: 'public',
      status: 204,
      handler: ({ req, res }) => {
        if (req.headers.origin !== undefined) requireSameOrigin(req, 'sign-out', d.publicOrigin);
        noStore(res).append('set-cookie', cookie(req, '', { clear: true, publicOrigin: d.publicOrigin }));
      },
    }),
  ];
}
