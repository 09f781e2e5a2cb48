import { z } from 'zod';
import type { BoardDrains, SharedBoards } from '../../shared-boards/index.js';
import { route, type Route } from '../route.js';

const roleSchema = z.object({ role: z.enum(['shared', 'whole']) }).strict();

/** Shared boards (admin): a board from the pool runs tenants' containers, or goes back to whole-board leases. */
export function sharedBoardRoutes(d: { shared: SharedBoards; drains: BoardDrains }): Route[] {
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
      handler: ({ params }) => {
        const drain = d.drains.status(params.id!);
        return { ...(d.shared.status(params.id!) ?? { engine: 'none', role: 'whole' }), ...(drain ? { drain } : {}) };
      },
    }),
    route({
      method: 'post',
      path: '/boards/:id/drain',
      summary: "Move every container lease on a shared board to other shared boards, keeping each container's changes and /data (202: follow it on GET /boards/:id/engine); the board is then marked down (drained)",
      access: 'admin',
      status: 202,
      handler: ({ params }) => d.drains.start(params.id!),
    }),
    route({
      method: 'post',
      path: '/boards/:id/undrain',
      summary: 'Put a drained shared board back in service: new container leases may land on it again',
      access: 'admin',
      handler: ({ params }) => d.drains.undrain(params.id!),
    }),
  ];
}
