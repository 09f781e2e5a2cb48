import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { Logger } from '../log.js';
import { ContainerLeaseDriver } from './driver.js';
import type { FenceTarget } from './fence.js';
import { containerHostConfigSchema } from './host.js';
import { containerHost } from './hosts.js';
import { BUILT_ARMHF_IMAGE_DIR, loadBuiltImage, type ContainerImageSource } from './images.js';
import { ContainerPool } from './pool.js';

/** The `containers` section of the server's configuration. */
export const containersConfigSchema = z.object({
  /** The `shared` pool: boards running a Docker engine. Empty = no container leases. */
  hosts: z.array(containerHostConfigSchema).default([]),
  /** Image builder outputs (directories with image.json) the driver may import into boards. */
  imageDirs: z.array(z.string()).default([BUILT_ARMHF_IMAGE_DIR]),
  pidsLimit: z.number().int().min(16).default(256),
  outbound: z.enum(['allow', 'deny']).default('allow'),
  /** Default root filesystem quota (MiB) where the storage driver supports one; null = none. */
  diskMb: z.number().int().min(16).nullable().default(2048),
  /** `require`: a lease that asks for a quota is refused where none can be enforced; `best-effort`: placed anyway. */
  diskQuota: z.enum(['require', 'best-effort']).default('require'),
  /**
   * Check each board's fence between tenants' bridges and the boot network (fence.ts): a board whose
   * tenants reach the controller's metadata or iSCSI port gets no lease. Off only for a board that is
   * not on the boot network at all.
   */
  fenceBootNetwork: z.boolean().default(true),
  stopTimeoutS: z.number().int().min(0).max(300).default(5),
  failover: z.boolean().default(false),
  healthIntervalMs: z.number().int().min(500).default(10_000),
  failThreshold: z.number().int().min(1).default(2),
  pingTimeoutMs: z.number().int().min(100).default(3_000),
  /** Shared boards the controller boots itself (src/shared-boards; `dozen boards set <id> --role shared`). */
  shared: z
    .object({
      /** The catalog image a shared board boots: Debian 12 + Docker (images/docker-host). */
      image: z.string().min(1).default('docker-host'),
      /** The second, blank LUN that becomes Docker's btrfs data-root (sparse: only written bytes use space). */
      dataDiskMb: z.number().int().min(512).default(8192),
      /** Each container lease's persistent /data on a shared board: its own iSCSI LUN (sparse), ext4. */
      volumeMb: z.number().int().min(16).default(1024),
      /** From the engine lease's active state to the engine answering /_ping over TLS. */
      readyTimeoutS: z.number().int().min(5).default(300),
      /** Keep this many shared boards (taking available whole boards); 0: only what operators make shared. */
      keep: z.number().int().min(0).default(0),
      /** A board the policy made shared goes back to the whole-board pool after this long without containers (when more than `keep`). */
      idleS: z.number().int().min(0).default(900),
    })
    .prefault({}),
});
export type ContainersConfig = z.output<typeof containersConfigSchema>;

export interface ContainerBackend {
  pool: ContainerPool;
  driver: ContainerLeaseDriver;
  /** The built images the driver may import into boards. */
  images: ContainerImageSource[];
  stop(): void;
}

/** Builds the pool and the driver from configuration; missing image builds are skipped (logged). */
export function createContainerBackend(config: ContainersConfig, logger: Logger, bootServices: FenceTarget[] = []): ContainerBackend {
  const pool = new ContainerPool(
    config.hosts.map((h) => containerHost(h)),
    { failThreshold: config.failThreshold, pingTimeoutMs: config.pingTimeoutMs },
  );
  const images = config.imageDirs.flatMap((dir) => {
    if (!existsSync(join(dir, 'image.json'))) {
      logger.warn({ dir }, 'container image not built; leases cannot use it until it is');
      return [];
    }
    return [loadBuiltImage(dir)];
  });
  const driver = new ContainerLeaseDriver({
    pool,
    images,
    pidsLimit: config.pidsLimit,
    outbound: config.outbound,
    diskMb: config.diskMb,
    diskQuota: config.diskQuota,
    fenceTargets: config.fenceBootNetwork ? bootServices : [],
    stopTimeoutS: config.stopTimeoutS,
    failover: config.failover,
    logger,
  });
  // Always: shared boards' engines join the pool at run time (src/shared-boards); an empty pool costs nothing.
  pool.startHealthChecks(config.healthIntervalMs);
  return { pool, driver, images, stop: () => pool.stopHealthChecks() };
}
