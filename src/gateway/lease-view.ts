import type { ConsoleSessions } from '../console/sessions.js';
import type { Inventory } from '../inventory/boards.js';
import type { Store } from '../store/store.js';
import { attachBoardSession } from './board-console.js';
import type { GatewayDeps, GatewayLease } from './gateway.js';

/**
 * The gateway's view of leases, from the state on every question. Board leases only (a container has
 * its own SSH port). A lease is reachable from its request until its release begins, as its WebSocket
 * console is (src/auth/authz.ts); its epoch is its current job, so a reimage closes what was open and a
 * power cycle does not.
 */
export function gatewayDeps(d: { store: Store; inventory: Inventory; consoles: ConsoleSessions; maxViewers?: number }): GatewayDeps {
  const lease = (id: string): GatewayLease | undefined => {
    const l = d.store.state.leases.find((x) => x.id === id);
    if (!l || l.kind !== 'board' || !l.boardId) return undefined;
    return {
      id: l.id,
      tenantId: l.tenantId,
      sshKeys: l.sshKeys,
      boardId: l.boardId,
      boardIp: d.inventory.find(l.boardId)?.ip,
      active: l.state !== 'released' && l.state !== 'releasing',
      epoch: l.jobId,
    };
  };
  return {
    lease,
    attachConsole: (l, who, sink) => {
      const session = l.boardId ? d.consoles.get(l.boardId) : undefined;
      return session && attachBoardSession(session, who, sink, d.maxViewers);
    },
  };
}
