import { z } from 'zod';
import { issueToken, revokeToken } from '../../auth/tokens.js';
import { SYSTEM_TENANT, tenantIdSchema } from '../../store/schema.js';
import type { Store } from '../../store/store.js';
import { ConflictError, NotFoundError } from '../../util/errors.js';
import { route, type Route } from '../route.js';

const tenantInput = z
  .object({ id: tenantIdSchema.refine((id) => id !== SYSTEM_TENANT, `${SYSTEM_TENANT} is the controller's own tenant (it holds shared boards)`), name: z.string().min(1).max(128) })
  .strict();
const tokenInput = z.object({ expiresAt: z.iso.datetime({ offset: true }).optional() }).strict();

/** Tenants and their tokens (admin). A token is shown once, when made; only its hash is kept. */
export function tenantRoutes(d: { store: Store }): Route[] {
  return [
    route({
      method: 'get',
      path: '/whoami',
      summary: 'Who this token belongs to',
      access: 'any',
      handler: ({ p }) => ({ role: p.role, tenant: p.tenantId, token: p.tokenId }),
    }),
    route({ method: 'get', path: '/tenants', summary: 'List tenants', access: 'admin', handler: () => d.store.state.tenants }),
    route({
      method: 'post',
      path: '/tenants',
      summary: 'Create a tenant and its first token (shown once)',
      access: 'admin',
      body: tenantInput,
      status: 201,
      handler: async ({ body }) => {
        const tenant = await d.store.update((s) => {
          if (s.tenants.some((t) => t.id === body.id)) throw new ConflictError(`tenant ${body.id} already exists`);
          const t = { ...body, createdAt: new Date().toISOString() };
          s.tenants.push(t);
          return t;
        });
        const { token, record } = await issueToken(d.store, tenant.id);
        return { tenant, token, tokenId: record.id };
      },
    }),
    route({
      method: 'post',
      path: '/tenants/:id/tokens',
      summary: 'Make another token for a tenant (shown once)',
      access: 'admin',
      body: tokenInput,
      status: 201,
      handler: async ({ params, body }) => {
        if (!d.store.state.tenants.some((t) => t.id === params.id)) throw new NotFoundError(`tenant ${params.id}`);
        const { token, record } = await issueToken(d.store, params.id!, body.expiresAt && new Date(body.expiresAt).toISOString());
        return { token, tokenId: record.id, expiresAt: record.expiresAt };
      },
    }),
    route({
      method: 'delete',
      path: '/tokens/:id',
      summary: 'Revoke a token',
      access: 'admin',
      status: 204,
      handler: ({ params }) => revokeToken(d.store, params.id!),
    }),
  ];
}
