import type { DiskStore } from '../../storage/disk-store.js';
import { NotFoundError } from '../../util/errors.js';
import { route, type Route } from '../route.js';

/** Disks the reconcile moved aside (no lease held them): the admin lists them and removes them explicitly. */
export function storageRoutes(d: { disks: DiskStore }): Route[] {
  return [
    route({
      method: 'get',
      path: '/storage/quarantine',
      summary: 'Disks no lease held at a reconcile, kept aside instead of destroyed',
      access: 'admin',
      handler: () => d.disks.listQuarantine(),
    }),
    route({
      method: 'delete',
      path: '/storage/quarantine/:name',
      summary: 'Remove a quarantined disk for good',
      access: 'admin',
      handler: async ({ params }) => {
        if (!(await d.disks.removeQuarantined(params.name!))) throw new NotFoundError(`quarantined disk ${params.name}`);
      },
    }),
  ];
}
