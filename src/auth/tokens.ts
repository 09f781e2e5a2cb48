import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Store } from '../store/store.js';
import type { Token } from '../store/schema.js';
import { HttpError } from '../util/errors.js';

/** Who is calling: the admin, or a tenant (by id). tokenId is null for the bootstrap admin token. */
export interface Principal {
  role: 'admin' | 'tenant';
  tenantId: string | null;
  tokenId: string | null;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * Make a token: `dz_<id>_<secret>`. The id finds the record; only the secret's hash is stored, so a
 * leaked state file leaks no usable token. The full token is returned once and never again.
 */
export async function issueToken(store: Store, tenantId: string | null, expiresAt?: string): Promise<{ token: string; record: Token }> {
  const id = randomBytes(6).toString('hex');
  const secret = randomBytes(24).toString('base64url');
  const record: Token = { id, tenantId, hash: sha256(secret), createdAt: new Date().toISOString(), ...(expiresAt ? { expiresAt } : {}) };
  await store.update((s) => {
    s.tokens.push(record);
  });
  return { token: `dz_${id}_${secret}`, record };
}

/** Split `dz_<id>_<secret>`; the secret is base64url, so it may itself hold `_`. */
export function parseToken(token: string): { id: string; secret: string } | null {
  const m = /^dz_([0-9a-f]{12})_([A-Za-z0-9_-]+)$/.exec(token);
  return m ? { id: m[1]!, secret: m[2]! } : null;
}

export async function revokeToken(store: Store, id: string): Promise<void> {
  await store.update((s) => {
    const t = s.tokens.find((x) => x.id === id);
    if (!t) throw new HttpError(404, `token ${id} not found`);
    t.revokedAt ??= new Date().toISOString();
  });
}

/** Resolve a bearer token to a principal; every failure is a 401 with the reason. */
export function authenticate(store: Store, bootstrapAdmin: string, bearer: string | undefined): Principal {
  if (!bearer) throw new HttpError(401, 'missing bearer token (Authorization: Bearer <token>)');
  if (safeEqual(bearer, bootstrapAdmin)) return { role: 'admin', tenantId: null, tokenId: null };
  const m = parseToken(bearer);
  const rec = m ? store.state.tokens.find((t) => t.id === m.id) : undefined;
  if (!m || !rec || !safeEqual(sha256(m.secret), rec.hash)) throw new HttpError(401, 'invalid token');
  if (rec.revokedAt) throw new HttpError(401, 'token revoked');
  if (rec.expiresAt && Date.parse(rec.expiresAt) <= Date.now()) throw new HttpError(401, 'token expired');
  if (rec.tenantId === null) return { role: 'admin', tenantId: null, tokenId: rec.id };
  return { role: 'tenant', tenantId: rec.tenantId, tokenId: rec.id };
}

function safeEqual(a: string, b: string): boolean {
  const x = createHash('sha256').update(a).digest();
  const y = createHash('sha256').update(b).digest();
  return timingSafeEqual(x, y);
}

export function bearerOf(header: string | undefined): string | undefined {
  return /^Bearer\s+(\S+)$/i.exec(header ?? '')?.[1];
}
