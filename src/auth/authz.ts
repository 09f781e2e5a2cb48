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

  /** Events on the SSE stream: admins see all, tenants their own. */
  canSeeEvent(p: Principal, tenantId: string | null | undefined): boolean {
    return p.role === 'admin' || (tenantId != null && tenantId === p.tenantId);
  },
};
