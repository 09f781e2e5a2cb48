import { z } from 'zod';
import { boardInputSchema, boardPatchSchema, type Inventory } from '../../inventory/boards.js';
import type { BoardEvents } from '../../inventory/events.js';
import { manualDesk } from '../../power/manual.js';
import { powerDriver } from '../../power/registry.js';
import { ConflictError } from '../../util/errors.js';
import { MAX_PAGE, page } from '../paging.js';
import { route, type Route } from '../route.js';
import type { SharedBoardStatus } from '../../shared-boards/index.js';

const boardStateSchema = z.object({ state: z.enum(['available', 'maintenance']), reason: z.string().min(1).max(500) }).strict();

/** Inventory routes. Boards are the admin's; tenants only see which exist and whether they are free. */
export function boardRoutes(d: { inventory: Inventory; events: BoardEvents; sharedStatus?: (id: string) => SharedBoardStatus | undefined }): Route[] {
  const withEngine = <B extends { id: string }>(b: B) => {
    const engine = d.sharedStatus?.(b.id);
    return engine ? { ...b, engine } : { ...b };
  };
  return [
    route({
      method: 'get',
      path: '/boards',
      summary: `List boards (tenants: id, model, arch and whether free); paged: ?limit= (at most ${MAX_PAGE}) &after=<id>, Link rel="next"`,
      access: 'any',
      handler: ({ p, req, res }) => {
        const boards = page(req, res, d.inventory.all(), (id) => d.inventory.position(id));
        return p.role === 'admin' ? boards.map(withEngine) : boards.map((b) => ({ id: b.id, model: b.model, arch: b.arch, available: b.state === 'available' }));
      },
    }),
    route({ method: 'post', path: '/boards', summary: 'Enroll a board', access: 'admin', body: boardInputSchema, status: 201, handler: ({ body }) => d.inventory.create(body) }),
    route({ method: 'get', path: '/boards/:id', summary: 'Show a board', access: 'admin', handler: ({ params }) => withEngine(d.inventory.get(params.id!)) }),
    route({ method: 'patch', path: '/boards/:id', summary: 'Change a board', access: 'admin', body: boardPatchSchema, handler: ({ params, body }) => d.inventory.patch(params.id!, body) }),
    route({
      method: 'delete',
      path: '/boards/:id',
      summary: 'Remove a board (not while leased)',
      access: 'admin',
      status: 204,
      handler: async ({ params }) => {
        await d.inventory.remove(params.id!);
        d.events.forget(params.id!);
      },
    }),
    route({
      method: 'get',
      path: '/boards/:id/events',
      summary: "A board's recent events: DHCP, files fetched with size and throughput, power, state changes, errors",
      access: 'admin',
      handler: ({ params }) => {
        d.inventory.get(params.id!);
        return d.events.list(params.id!);
      },
    }),
    route({
      method: 'post',
      path: '/boards/:id/state',
      summary: 'Put a board in maintenance, or make it available (clears an error)',
      access: 'admin',
      body: boardStateSchema,
      handler: async ({ params, body }) => {
        const b = await d.inventory.transition(params.id!, body.state, `operator: ${body.reason}`);
        d.events.add(b.id, { type: 'state', message: `${body.state} (operator: ${body.reason})` });
        return b;
      },
    }),
    route({
      method: 'get',
      path: '/boards/:id/power',
      summary: "A board's power state, and actions waiting for an operator (manual power)",
      access: 'admin',
      handler: async ({ params }) => {
        const b = d.inventory.get(params.id!);
        return { state: await powerDriver(b.power, b.id).state(), waiting: manualDesk.waiting(b.id) };
      },
    }),
    route({
      method: 'post',
      path: '/boards/:id/power/confirm',
      summary: 'Operator: the waiting manual power action is done',
      access: 'admin',
      handler: ({ params }) => {
        d.inventory.get(params.id!);
        if (!manualDesk.confirm(params.id!)) throw new ConflictError(`no power action is waiting on board ${params.id}`);
        return { confirmed: true };
      },
    }),
    route({ method: 'get', path: '/discovered', summary: 'MACs that asked for DHCP but are not enrolled', access: 'admin', handler: () => d.inventory.discovered() }),
  ];
}
