import type { Logger } from '../log.js';
import { HostUnavailableError } from './errors.js';
import type { ContainerHost } from './host.js';
import type { ContainerImageSource } from './images.js';
import type { FenceChecks } from './fence.js';
import type { LeaseIndex } from './lease-index.js';
import type { LeaseLocks } from './locks.js';
import type { OutboundPolicy } from './network.js';
import type { ContainerPool } from './pool.js';
import type { ContainerLeaseSpec, DiskQuotaPolicy } from './types.js';
import type { LeaseVolumes } from './volumes.js';

/** What the driver's parts share: its settings (defaults applied), the lease index and the locks. */
export interface DriverContext {
  readonly pool: ContainerPool;
  readonly images: ContainerImageSource[];
  readonly pidsLimit: number;
  readonly outbound: OutboundPolicy;
  readonly diskMb: number | null;
  readonly diskQuota: DiskQuotaPolicy;
  readonly stopTimeoutS: number;
  readonly log: Logger;
  readonly index: LeaseIndex;
  readonly locks: LeaseLocks;
  /** The boot-network fence of each board, probed (fence.ts). */
  readonly fence: FenceChecks;
  /** Persistent /data (volumes.ts); set once storage and shared boards exist (setVolumes). */
  volumes: LeaseVolumes;
}

/** True when the lease asks for a disk quota that must hold (policy `require`). */
export function requiresQuota(ctx: DriverContext, spec: ContainerLeaseSpec): boolean {
  return ctx.diskQuota === 'require' && (spec.diskMb ?? ctx.diskMb) !== null;
}

/** A lease's board, or 503 naming it when it is marked down / failing health checks. */
export function usableHost(pool: ContainerPool, hostId: string): ContainerHost {
  const host = pool.get(hostId);
  const down = pool.downReason(hostId);
  if (down) throw new HostUnavailableError(hostId, `shared board ${host.describe()} ${down}`, down);
  return host;
}
