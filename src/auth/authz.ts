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
   * admin's (both may type). `watch` joins without typing, whoever asks. null = not found or not
   * yours — the caller answers 404.
   */
  consoleGrant(
    store: Store,
    p: Principal,
    kind: 'lease' | 'board',
    id: string,
    o: { watch?: boolean } = {},
  ): { boardId: string; canType: boolean; who: string; detail: boolean; binding: GrantBinding } | null {
    const who = p.role === 'admin' ? 'admin' : `tenant ${p.tenantId}`;
    if (kind === 'board') {
      if (p.role !== 'admin' || !store.state.boards.some((b) => b.id === id)) return null;
      return { boardId: id, canType: !o.watch, who, detail: true, binding: { tokenId: p.tokenId, admin: true } };
    }
    const lease = store.state.leases.find((l) => l.id === id);
    if (!lease || !leaseConsoleOpen(lease) || !authz.canSeeLease(p, lease)) return null;
    const binding: GrantBinding = { tokenId: p.tokenId, admin: p.role === 'admin', lease: { id: lease.id, jobId: lease.jobId, consoleId: consoleIdOf(lease), hostId: lease.container?.hostId } };
    return { boardId: consoleIdOf(lease), canType: authz.canTypeOnConsole(p, lease) && !o.watch, who, detail: p.role === 'admin', binding };
  },

  /**
   * Why a grant made earlier no longer holds, or null while it does. A tenant's lease console ends with
   * the lease's release, a reimage (a new job: a new boot with new secrets) or a failover, and with its
   * token's revocation or expiry. Admin sockets end only with their token.
   */
  grantEnded(store: Store, b: GrantBinding, now = Date.now()): string | null {
    const tokenEnd = authz.tokenEnded(store, b.tokenId, now);
    if (tokenEnd) return tokenEnd;
    if (!b.lease || b.admin) return null;
    const lease = store.state.leases.find((l) => l.id === b.lease!.id);
    if (!lease || !leaseConsoleOpen(lease)) return 'lease released';
    if (lease.jobId !== b.lease.jobId) return `lease ${lease.state === 'releasing' ? 'released' : 'reimaged'}`;
    if (consoleIdOf(lease) !== b.lease.consoleId || lease.container?.hostId !== b.lease.hostId) return 'lease moved';
    return null;
  },

  /** Why a token no longer authenticates (revoked, expired, gone), or null; the bootstrap admin token (null id) never ends. */
  tokenEnded(store: Store, tokenId: string | null, now = Date.now()): string | null {
    if (tokenId === null) return null;
    const t = store.state.tokens.find((x) => x.id === tokenId);
    if (!t) return 'token removed';
    if (t.revokedAt) return 'token revoked';
    if (t.expiresAt && Date.parse(t.expiresAt) <= now) return 'token expired';
    return null;
  },

  /** Events on the SSE stream: admins see all, tenants their own. */
  canSeeEvent(p: Principal, tenantId: string | null | undefined): boolean {
    return p.role === 'admin' || (tenantId != null && tenantId === p.tenantId);
  },
};

/** What a console grant was given for: checked again while the socket is open (authz.grantEnded). */
export interface GrantBinding {
  tokenId: string | null;
  admin: boolean;
  lease?: { id: string; jobId?: string; consoleId: string; hostId?: string };
}

/** A lease's console may be opened from its request until its release begins. */
function leaseConsoleOpen(lease: Pick<Lease, 'state'>): boolean {
  return lease.state !== 'released' && lease.state !== 'releasing';
}

/** The console session a lease's console is: its board's serial line, or its container's TTY. */
export function consoleIdOf(lease: Pick<Lease, 'id' | 'kind' | 'boardId'>): string {
  return lease.kind === 'board' ? lease.boardId! : `container:${lease.id}`;
}
