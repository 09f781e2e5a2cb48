import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { HttpError } from '../util/errors.js';

export interface Principal {
  role: 'admin' | 'tenant';
  name: string;
}

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Bearer-token authentication. Only the admin token exists so far; tenants arrive with leases. */
export function bearerAuth(adminToken: string): RequestHandler {
  const admin = digest(adminToken);
  return (req, _res, next) => {
    const m = /^Bearer\s+(\S+)$/i.exec(req.get('authorization') ?? '');
    if (!m) return next(new HttpError(401, 'missing bearer token (Authorization: Bearer <token>)'));
    if (!timingSafeEqual(digest(m[1]!), admin)) return next(new HttpError(401, 'invalid or revoked token'));
    req.principal = { role: 'admin', name: 'admin' };
    next();
  };
}

export function requireAdmin(): RequestHandler {
  return (req, _res, next) => (req.principal?.role === 'admin' ? next() : next(new HttpError(403, 'admin only')));
}
