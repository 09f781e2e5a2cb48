import type { Lease } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { HttpError, NotFoundError } from '../util/errors.js';
import type { Principal } from './tokens.js';

/**
 * Every authorization rule, in one place. Tenants see and act only on their own leases (and the
 * jobs, consoles, logs and metadata of those); another tenant's lease is "not found", never "forbidden",
 * so its existence is not revealed. Boards, images and tenants are the admin's.
 */
export const authz = {
  isAdmin(p: Principal): boolean {
    return p.role === 'admin';
  },

  requireAdmin(p: Principal): void {
    if (p.role !== 'admin') throw new HttpError(403, 'admin only');
  },

  canSeeLease(p: Principal, lease: Pick<Lease, 'tenantId'>): boolean {
    return p.role === 'admin' || lease.tenantId === p.tenantId;
  },

  /** The lease if the caller may see it; otherwise 404 whether or not it exists. */
  lease(store: Store, p: Principal, id: string): Lease {
    const lease = store.state.leases.find((l) => l.id === id);
    if (!lease || !authz.canSeeLease(p, lease)) throw new NotFoundError(`lease ${id}`);
    return lease;
  },

  /** The owner and admins may type on a lease's console; nobody else may even watch. */
  canTypeOnConsole(p: Principal, lease: Pick<Lease, 'tenantId'>): boolean {
    return authz.canSeeLease(p, lease);
  },

  /**
   * Who may open which console: a board's console is the admin's; a lease's, its owner's and the
   * admin's (both may type). null = not found or not yours — the caller answers 404.
   */
  consoleGrant(store: Store, p: Principal, kind: 'lease' | 'board', id: string): { boardId: string; canType: boolean; who: string } | null {
    const who = p.role === 'admin' ? 'admin' : `tenant ${p.tenantId}`;
    if (kind === 'board') {
      if (p.role !== 'admin' || !store.state.boards.some((b) => b.id === id)) return null;
      return { boardId: id, canType: true, who };
    }
    const lease = store.state.leases.find((l) => l.id === id);
    if (!lease || lease.state === 'released' || !authz.canSeeLease(p, lease)) return null;
    return { boardId: consoleIdOf(lease), canType: authz.canTypeOnConsole(p, lease), who };
  },

  /** Events on the SSE stream: admins see all, tenants their own. */
  canSeeEvent(p: Principal, tenantId: string | null | undefined): boolean {
    return p.role === 'admin' || (tenantId != null && tenantId === p.tenantId);
  },
};

/** The console session a lease's console is: its board's serial line, or its container's TTY. */
export function consoleIdOf(lease: Pick<Lease, 'id' | 'kind' | 'boardId'>): string {
  return lease.kind === 'board' ? lease.boardId! : `container:${lease.id}`;
}
