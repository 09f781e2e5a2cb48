import type { BoardNetwork } from '../../network/board-network.js';
import { route, type Route } from '../route.js';

/** The boot network's fencing as the driver holds it, checked against the datapath now (admins). */
export function networkRoutes(d: { network: BoardNetwork }): Route[] {
  return [
    route({
      method: 'get',
      path: '/network',
      summary: 'Board ports, private networks and anything out of place in their fencing',
      access: 'admin',
      handler: () => d.network.state(),
    }),
  ];
}
