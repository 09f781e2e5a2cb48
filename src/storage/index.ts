import type { Lease } from '../store/schema.js';
import type { StorageConfig } from './config.js';
import type { DiskStore } from './disk-store.js';
import { IscsiBoardStorage } from './iscsi-storage.js';
import { openDiskStore } from './open-store.js';
import { claimStorage } from './identity.js';
import { targetExporter } from './exporters.js';
import { TgtDaemon } from './tgt-daemon.js';
import type { TargetExporter } from './tgt-exporter.js';

export { storageConfigSchema, type StorageConfig } from './config.js';
export { StorageError, type DiskStore, type DiskInfo, type ImageDisk } from './disk-store.js';
export { IscsiBoardStorage, initiatorName } from './iscsi-storage.js';
export { openDiskStore } from './open-store.js';
export { TARGET_EXPORTERS, targetExporter, type TargetExporterSpec } from './exporters.js';
export { TgtDaemon } from './tgt-daemon.js';
export { TgtExporter } from './tgt-exporter.js';
export { StorageOwnershipError } from './identity.js';

export interface RunningStorage {
  storage: IscsiBoardStorage;
  store: DiskStore;
  daemon: TgtDaemon;
  exporter: TargetExporter;
  /** Why the disk store driver was chosen (for the start-up log and the status API). */
  driverReason: string;
  /** What the start-up reconcile fixed. */
  reconciled: string[];
  /** Leases whose disk the start-up reconcile did not find. */
  missingDisks: string[];
  /** The controller id the storage directory and the state now share. */
  controllerId: string;
  stop(opts?: { leaveRunning?: boolean }): Promise<void>;
}

/**
 * Everything iSCSI root disks need, started: the disk store (probed), our tgtd on `portalIp`
 * (supervised; restarts re-create targets from `leases()`), the BoardStorage, and a first reconcile
 * so tgtd and the store match the recorded leases. `leases` should return the store's current leases.
 */
export async function startIscsiStorage(
  cfg: StorageConfig,
  o: { portalIp: string; leases: () => Lease[]; controllerId: string | undefined; stateFile: string; acl: 'address' | 'name'; dataDiskBytes?: number },
): Promise<RunningStorage> {
  // Ownership first: a directory of another controller is refused before anything in it is touched.
  const owner = await claimStorage(cfg.dir, o.controllerId, { adopt: cfg.adopt, stateFile: o.stateFile });
  const { store, reason } = await openDiskStore(cfg.dir, cfg.driver);
  const tgtd = { controlPort: cfg.tgt.controlPort, portalIp: o.portalIp, portalPort: cfg.tgt.portalPort };
  const daemon = new TgtDaemon(tgtd);
  await daemon.start();
  try {
    // The exporter drives the tgtd just started: same control port, same portal.
    const exporter = targetExporter({ driver: 'tgt', ...tgtd, directIo: cfg.tgt.directIo });
    const storage = new IscsiBoardStorage({
      store,
      exporter,
      daemon,
      recorded: o.leases,
      iqnPrefix: cfg.iqnPrefix,
      acl: o.acl,
      ...(o.dataDiskBytes ? { dataDiskBytes: o.dataDiskBytes } : {}),
      diskSizeBytes: cfg.diskSizeMb ? cfg.diskSizeMb * 1024 * 1024 : undefined,
    });
    const { fixed, missing } = await storage.reconcile(o.leases());
    fixed.push(...(await store.sweepQuarantine(cfg.quarantineDays * 86_400_000)));
    return { storage, store, daemon, exporter, driverReason: reason, reconciled: fixed, missingDisks: missing, controllerId: owner.id, stop: (opts) => daemon.stop(opts) };
  } catch (err) {
    await daemon.stop();
    throw err;
  }
}
