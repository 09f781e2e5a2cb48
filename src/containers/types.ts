import { z } from 'zod';

/** Docker platform strings: `linux/arm/v7` (armhf boards), `linux/arm64`, `linux/amd64`. */
export type Platform = string;

const idRe = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
// One public key per entry, one line, in authorized_keys syntax (options are not accepted).
const sshKeyRe = /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( [^\r\n]*)?$/;

export const containerLeaseSpecSchema = z.object({
  leaseId: z.string().regex(idRe, 'letters, digits, . _ -; at most 63'),
  tenantId: z.string().regex(idRe, 'letters, digits, . _ -; at most 63'),
  /** A Docker image reference present on the boards or known to the driver's image sources. */
  image: z.string().min(1).max(255),
  /** Memory limit; swap is limited to the same value (no extra swap). Docker's minimum is 6 MiB. */
  memoryMb: z.number().int().min(8).max(1 << 20),
  cpus: z.number().positive().max(1024),
  sshKeys: z.array(z.string().trim().regex(sshKeyRe, 'an OpenSSH public key line')).max(64),
  hostname: z.string().regex(/^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/, 'an RFC 1123 host name label'),
  /** Root filesystem quota where the board's storage driver supports one (see inspect().disk). */
  diskMb: z.number().int().min(16).optional(),
});
export type ContainerLeaseSpec = z.infer<typeof containerLeaseSpecSchema>;

/** Where a container lease runs: what create/reimage/recreate return and the lease layer stores. */
export interface ContainerLease {
  leaseId: string;
  tenantId: string;
  hostId: string;
  containerId: string;
  /** Tenants connect to sshHost:sshPort; null when the tenant network denies outbound (no published ports). */
  sshHost: string;
  sshPort: number | null;
  network: string;
  spec: ContainerLeaseSpec;
  /** The image the container runs when it is not the spec's (a moved container's committed image). */
  runImage?: string;
  /** Its /data on the board (volumes.ts), or null: none. */
  data?: string | null;
}

/** What the lease layer recorded; spec is needed to recreate the lease elsewhere (failover). */
export interface RecordedContainerLease {
  leaseId: string;
  hostId: string;
  containerId: string;
  spec?: ContainerLeaseSpec;
  /** Being moved right now (a drain or failover): its container may be on either board. */
  migrating?: boolean;
}

/** Whether a lease that asks for a disk quota may run where none holds (see driver.ts). */
export type DiskQuotaPolicy = 'require' | 'best-effort';

export type ContainerPowerAction = 'on' | 'off' | 'cycle';

export interface DiskQuota {
  /** The quota asked for, in MiB. */
  quotaMb: number | null;
  enforced: boolean;
  /** How it is enforced, or why it isn't ("overlay2 on extfs has no per-container quota ..."). */
  detail: string;
}

export interface ContainerLeaseStatus {
  leaseId: string;
  tenantId: string;
  hostId: string;
  containerId: string;
  image: string;
  platform: Platform | null;
  /** Docker's state: created, running, paused, restarting, removing, exited, dead. */
  state: string;
  power: 'on' | 'off';
  startedAt: string | null;
  finishedAt: string | null;
  exitCode: number | null;
  /**
   * The kernel OOM killer hit a process of this container since it last started: Docker's
   * State.OOMKilled (set only when the container's init dies) or an `oom` event from the engine
   * (any process; read from the engine's event buffer, which keeps the last 256 events).
   */
  oomKilled: boolean;
  oomEvents: number;
  restartCount: number;
  sshHost: string;
  sshPort: number | null;
  network: string;
  ip: string | null;
  outbound: 'allow' | 'deny';
  limits: { memoryMb: number; memorySwapMb: number | null; cpus: number; pidsLimit: number | null };
  disk: DiskQuota;
  /** Its root is an unprivileged uid on the board (the engine's user namespace). */
  userns: boolean;
}

export interface ReconcileResult {
  /** Containers labeled by us that no record claims (removed). */
  orphansRemoved: Array<{ hostId: string; containerId: string; leaseId: string }>;
  /** Records whose container is gone from a reachable host. */
  missing: RecordedContainerLease[];
  /** Tenant networks left without containers (removed). */
  networksRemoved: Array<{ hostId: string; network: string }>;
  /** Hosts that could not be asked; their records are neither confirmed nor reported missing. */
  unreachable: Array<{ hostId: string; error: string }>;
}

/** Labels on every container we create; `dozen.lease` marks a container as ours. */
export const LABEL = {
  lease: 'dozen.lease',
  tenant: 'dozen.tenant',
  host: 'dozen.host',
  memoryMb: 'dozen.memory-mb',
  spec: 'dozen.spec',
  disk: 'dozen.disk',
  platform: 'dozen.platform',
  outbound: 'dozen.outbound',
  sshPort: 'dozen.ssh-port',
  /** The board path of the lease's persistent volume, bound at /data. */
  data: 'dozen.data',
} as const;
