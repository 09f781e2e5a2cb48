import type { ContainerHost } from './host.js';

/** Where a lease's persistent volume is in its container. */
export const DATA_PATH = '/data';

/**
 * A container lease's persistent volume (`/data`): storage that outlives the board the container runs
 * on, so a drain or a failover brings it along (issue #15). The driver asks for it before it creates a
 * container and binds the path it gets at /data.
 */
export interface LeaseVolumes {
  /** Whether `host` can take the lease's volume (a lease that has one goes only where it can follow). */
  accepts(host: ContainerHost, leaseId: string): boolean;
  /**
   * Makes the lease's volume reachable from `host` alone (any other board it was on is fenced off first)
   * and mounts it there; returns its path on the board, or null when `host` takes no volumes (a
   * hand-configured engine: its leases have no /data).
   */
  attach(host: ContainerHost, leaseId: string): Promise<string | null>;
  /**
   * Makes sure the volume of a lease recorded on `host` is mounted there again (the board rebooted: the
   * controller logs it in, the board never does by itself); true when it had to mount it now.
   */
  remount(host: ContainerHost, leaseId: string): Promise<boolean>;
  /**
   * Unmounts the volume from `host`, which must answer (a drain, a release; the container there is
   * gone); `remove` (release) also removes its mount point. The volume stays.
   */
  detach(host: ContainerHost, leaseId: string, opts?: { remove?: boolean }): Promise<void>;
  /** The lease lives on another board now: whatever of its volume is left on `host` goes (a board back from the dead). */
  evict(host: ContainerHost, leaseId: string): Promise<void>;
  /** The lease is over: its volume goes. Idempotent. */
  destroy(leaseId: string): Promise<void>;
}

/** No engine takes volumes: no lease has /data (hand-configured engines only, or no iSCSI storage). */
export const NO_VOLUMES: LeaseVolumes = {
  accepts: () => true,
  evict: async () => {},
  attach: async () => null,
  remount: async () => false,
  detach: async () => {},
  destroy: async () => {},
};
