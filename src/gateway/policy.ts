import { timingSafeEqual } from 'node:crypto';
import ssh2 from 'ssh2';

/**
 * Who may do what through the gateway, as pure functions of a lease's current view: the SSH server
 * (gateway.ts) asks these and knows nothing of leases itself.
 */

/** What the gateway needs of a lease: the deps build it from the lease service on every question. */
export interface GatewayLease {
  id: string;
  tenantId: string;
  /** OpenSSH one-line public keys (`ssh-ed25519 AAAA… comment`). */
  sshKeys: readonly string[];
  boardId?: string;
  boardIp?: string;
  /** Only an active lease with a board is reachable. */
  active: boolean;
  /**
   * Changes when the lease's board starts over under it (reimage): what was opened before (consoles,
   * tunnels) closes. Any value; compared with `===`.
   */
  epoch?: string | number;
}

/** The SSH user name says what is wanted: `<leaseId>` jumps to the lease's board, `console+<leaseId>` is its console. */
export type GatewayUser = { kind: 'jump'; leaseId: string } | { kind: 'console'; leaseId: string };

const LEASE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** undefined for a name that can name no lease (it fails exactly as an unknown lease does). */
export function parseGatewayUser(username: string): GatewayUser | undefined {
  const console = username.startsWith('console+');
  const leaseId = console ? username.slice('console+'.length) : username;
  if (!LEASE_ID.test(leaseId)) return undefined;
  return { kind: console ? 'console' : 'jump', leaseId };
}

/** A public key as SSH compares them: algorithm and key blob (the comment is not part of it). */
export interface KeyId {
  algo: string;
  blob: Buffer;
}

/** The key of an OpenSSH one-line public key, or undefined when it does not parse (such a key matches nothing). */
export function parsePublicKey(line: string): (KeyId & { verify(data: Buffer, sig: Buffer, hashAlgo?: string): boolean }) | undefined {
  const k = ssh2.utils.parseKey(line);
  if (k instanceof Error || Array.isArray(k) || k.isPrivateKey()) return undefined;
  return { algo: k.type, blob: k.getPublicSSH(), verify: (data, sig, hashAlgo) => k.verify(data, sig, hashAlgo) === true };
}

function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * The lease key a presented key is, or undefined. Every listed key is compared (no early exit), and an
 * unknown lease is compared against nothing in the same way as a lease whose keys do not match.
 */
export function findLeaseKey(lease: GatewayLease | undefined, presented: KeyId): ReturnType<typeof parsePublicKey> {
  let found: ReturnType<typeof parsePublicKey>;
  for (const line of lease?.sshKeys ?? []) {
    const k = parsePublicKey(line);
    if (k && k.algo === presented.algo && sameBytes(k.blob, presented.blob) && !found) found = k;
  }
  return found;
}

/** What an authenticated connection was granted: checked again on every channel and while channels are open. */
export interface Grant {
  user: GatewayUser;
  key: KeyId;
  /** The lease as it was when the grant was made (board, IP, epoch). */
  boardId?: string;
  boardIp?: string;
  epoch?: string | number;
}

/**
 * Why a grant no longer holds, in words a tenant may read, or null while it does: the lease is gone or
 * no longer active, its board or epoch changed (released, reimaged), or the key was taken off the lease.
 */
export function grantProblem(grant: Grant, lease: GatewayLease | undefined): string | null {
  if (!lease || !lease.active) return `lease ${grant.user.leaseId} is no longer active`;
  if (lease.boardId !== grant.boardId || lease.boardIp !== grant.boardIp) return `lease ${grant.user.leaseId} moved to another board`;
  if (lease.epoch !== grant.epoch) return `lease ${grant.user.leaseId} was reimaged`;
  if (!findLeaseKey(lease, grant.key)) return `this key was removed from lease ${grant.user.leaseId}`;
  return null;
}

/**
 * The decision on a `direct-tcpip` channel (ProxyJump / `ssh -W`): only the jump user of an active lease
 * with a board, only to exactly that board's IP as the lease states it, only to `allowedPort`. The
 * destination string is compared, never resolved: a host name is refused.
 */
export function checkDirectTcpip(
  grant: Grant,
  lease: GatewayLease | undefined,
  dest: { host: string; port: number },
  allowedPort: number,
): { ok: true; host: string; port: number } | { ok: false; reason: string } {
  if (grant.user.kind !== 'jump') return { ok: false, reason: 'forwarding is for the jump user only' };
  const problem = grantProblem(grant, lease);
  if (problem) return { ok: false, reason: problem };
  if (!lease!.boardIp) return { ok: false, reason: 'lease has no board' };
  if (dest.host.toLowerCase() !== lease!.boardIp.toLowerCase()) return { ok: false, reason: 'destination is not the lease board' };
  if (dest.port !== allowedPort) return { ok: false, reason: `only port ${allowedPort} of the board is reachable` };
  return { ok: true, host: lease!.boardIp, port: allowedPort };
}

/**
 * Whether a lease may be granted at all to a user: active, with a board (a console needs the board,
 * a jump needs its IP). Asked at authentication, with the key already matched.
 */
export function leaseUsable(user: GatewayUser, lease: GatewayLease | undefined): lease is GatewayLease {
  if (!lease || !lease.active || !lease.boardId) return false;
  return user.kind === 'console' || !!lease.boardIp;
}
