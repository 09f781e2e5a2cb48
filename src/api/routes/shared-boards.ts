import { z } from 'zod';
import type { SharedBoards } from '../../shared-boards/index.js';
import { route, type Route } from '../route.js';

const roleSchema = z.object({ role: z.enum(['shared', 'whole']) }).strict();

/** Shared boards (admin): a board from the pool runs tenants' containers, or goes back to whole-board leases. */
export function sharedBoardRoutes(d: { shared: SharedBoards }): Route[] {
  return [
    route({
      method: 'post',
      path: '/boards/:id/role',
      summary: 'Make a board shared (the controller boots it as a Docker engine for container leases) or give it back (whole); 409 while containers run there',
      access: 'admin',
      body: roleSchema,
      handler: ({ params, body }) => d.shared.setRole(params.id!, body.role),
    }),
    route({
      method: 'get',
      path: '/boards/:id/engine',
      summary: "A shared board's engine: its lease and whether it is provisioning, waiting for /_ping, ready or failed",
      access: 'admin',
      handler: ({ params }) => d.shared.status(params.id!) ?? { engine: 'none', role: 'whole' },
    }),
  ];
}
