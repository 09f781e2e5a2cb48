import { authz } from '../../auth/authz.js';
import { eventFor } from '../../auth/redact.js';
import type { Bus } from '../../leases/bus.js';
import type { Store } from '../../store/store.js';
import { createLeaseSchema, powerActionSchema, reimageSchema } from '../../leases/schemas.js';
import type { LeaseService } from '../../leases/service.js';
import { HttpError } from '../../util/errors.js';
import { MAX_PAGE, page } from '../paging.js';
import { route, type Route } from '../route.js';

export function leaseRoutes(d: { leases: LeaseService; bus: Bus; store: Store; limits?: { eventStreamsPerToken: number } }): Route[] {
  const streams = new Map<string, number>(); // open event streams per token
  return [
    route({
      method: 'post',
      path: '/leases',
      summary: 'Lease a whole board (or a container: kind container, or kind any when no board is free)',
      access: 'any',
      body: createLeaseSchema,
      status: 202,
      handler: ({ p, body }) => d.leases.create(p, body),
    }),
    route({
      method: 'get',
      path: '/leases',
      summary: `Your leases (admin: all): live ones and those released in the last hour (older: GET /leases/:id); paged: ?limit= (at most ${MAX_PAGE}) &after=<id>, Link rel="next"`,
      access: 'any',
      handler: ({ p, req, res }) => d.leases.present(p, page(req, res, d.leases.visible(p))),
    }),
    route({ method: 'get', path: '/leases/:id', summary: 'Show a lease', access: 'any', handler: ({ p, params }) => d.leases.getAny(p, params.id!) }),
    route({
      method: 'post',
      path: '/leases/:id/reimage',
      summary: 'Reimage: a fresh disk from the image (or another image), then boot it',
      access: 'any',
      body: reimageSchema,
      status: 202,
      handler: ({ p, params, body }) => d.leases.reimage(p, params.id!, body.image),
    }),
    route({
      method: 'post',
      path: '/leases/:id/power',
      summary: "Switch the lease's board (or container) on, off, or cycle it: a power job to follow (GET /v1/jobs/:id, events) or cancel",
      access: 'any',
      body: powerActionSchema,
      status: 202,
      handler: ({ p, params, body }) => d.leases.power(p, params.id!, body.action),
    }),
    route({
      method: 'delete',
      path: '/leases/:id',
      summary: 'Release: power off, drop the target, destroy the disk, board back to the pool',
      access: 'any',
      status: 202,
      handler: ({ p, params }) => d.leases.release(p, params.id!),
    }),
    route({ method: 'get', path: '/jobs/:id', summary: 'A job and its steps', access: 'any', handler: ({ p, params }) => d.leases.jobAny(p, params.id!) }),
    route({
      method: 'post',
      path: '/jobs/:id/cancel',
      summary: 'Cancel a running power job (it ends failed, "cancelled: …"); a provision or reimage is stopped by releasing the lease',
      access: 'any',
      handler: ({ p, params }) => d.leases.cancel(p, params.id!),
    }),
    route({
      method: 'get',
      path: '/events',
      summary: 'Server-Sent Events: jobs, leases and boards the caller may see',
      access: 'any',
      handler: ({ p, req, res }) => {
        const key = p.tokenId ?? `${p.role}:bootstrap`;
        const open = streams.get(key) ?? 0;
        const max = d.limits?.eventStreamsPerToken;
        if (max !== undefined && open >= max) throw new HttpError(429, `too many open event streams for this token (at most ${max})`);
        streams.set(key, open + 1);
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
        res.write(': dozen events\n\n');
        const off = d.bus.subscribe((ev) => {
          if (!authz.canSeeEvent(p, ev.tenantId)) return;
          res.write(`event: ${ev.type}\ndata: ${JSON.stringify(eventFor(p, ev))}\n\n`);
        });
        const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
        // The stream lives as long as its token: revocation or expiry ends it (checked 4 times a second).
        const grant = setInterval(() => {
          const ended = authz.tokenEnded(d.store, p.tokenId);
          if (!ended) return;
          res.write(`event: end\ndata: ${JSON.stringify({ reason: ended })}\n\n`);
          res.end();
        }, 250);
        req.on('close', () => {
          off();
          clearInterval(ping);
          clearInterval(grant);
          const n = (streams.get(key) ?? 1) - 1;
          if (n > 0) streams.set(key, n);
          else streams.delete(key);
        });
      },
    }),
  ];
}
