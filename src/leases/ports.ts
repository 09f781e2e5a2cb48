import type { Image } from '../images/catalog.js';
import type { Board, ContainerRecord, IscsiRecord, Lease } from '../store/schema.js';

/**
 * Per-lease root disks for whole boards (implemented by src/storage): a copy-on-write clone of the
 * image's root disk, exported over iSCSI to that board alone. Every method is idempotent, because a
 * job that was interrupted by a crash runs its step again.
 */
export interface BoardStorage {
  /**
   * Clone (if not yet) and export (if not yet) the lease's disk to this board. With `dataDiskBytes`, also
   * a blank sparse disk of that size (if not yet) as LUN 2 of the same target: a shared board's Docker data-root.
   */
  attach(lease: Lease, board: Board, image: Image, opts?: { dataDiskBytes?: number }): Promise<IscsiRecord>;
  /** A fresh CHAP secret on the lease's target for the next boot (the old one stops working); returns the new record. */
  newBootSecret(lease: Lease): Promise<IscsiRecord>;
  /** Remove the lease's target and destroy its disk. */
  detach(lease: Lease): Promise<void>;
  /** Kernel command-line arguments that make the image's initramfs log in to the target. */
  kernelArgs(rec: IscsiRecord, image: Image): string;
  /** Make tgtd and the disk store match the leases that hold disks (quarantining, never destroying); returns what it fixed and the leases whose disk is gone. */
  reconcile(leases: Lease[]): Promise<{ fixed: string[]; missing: string[] }>;
}

/** Hooks into the console sessions: start a lease's log when it starts, purge it on release. */
export interface ConsoleHooks {
  leaseStarted(boardId: string, leaseId: string): void;
  leaseEnded(boardId: string, leaseId: string): Promise<void>;
}

/**
 * The boot network (src/network): a leased board joins its tenant's private network, where its other
 * boards are; a release takes it out. Both idempotent (a job resumed after a crash runs its step again).
 */
export interface NetworkHooks {
  join(boardId: string, tenantId: string): Promise<void>;
  leave(boardId: string): Promise<void>;
  /** False for a board whose port is not fenced: allocation passes it over (its join would fail). */
  fenced?(boardId: string): boolean;
}

/** Container leases on shared boards (implemented over src/containers). */
export interface ContainerLeases {
  /** The engine's reference for an image name (alias or reference), or null when unknown. */
  resolveImage(name: string): string | null;
  /** Image names tenants may ask for. */
  imageNames(): string[];
  /** Whether any engine is in the pool (configured, or a shared board's, once registered). */
  hasHosts(): boolean;
  /** Place and start the lease's container; throws a ConflictError when nothing fits. */
  create(lease: Lease, size: { memoryMb: number; cpus: number }): Promise<ContainerRecord>;
  reimage(lease: Lease): Promise<ContainerRecord>;
  power(lease: Lease, action: 'on' | 'off' | 'cycle'): Promise<void>;
  release(lease: Lease): Promise<void>;
  reconcile(leases: Lease[]): Promise<string[]>;
}

/** What container failover did (src/containers/failover.ts), as LeaseService.recordFailover records it. */
export interface ContainerFailover {
  /** Leases recreated on another shared board, with their new container. */
  moved: Array<{ leaseId: string; container: ContainerRecord }>;
  /** Leases that could not be moved: the board they were on, and why. */
  failed: Array<{ leaseId: string; from: string; error: string }>;
}
