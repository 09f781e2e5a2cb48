import { z } from 'zod';
import { DEFAULT_IQN_PREFIX } from './iscsi-storage.js';

/**
 * The `storage` section of the server configuration (src/config.ts adds it as
 * `storage: storageConfigSchema.prefault({})`). The iSCSI portal listens on the server's `bootIp`.
 */
export const storageConfigSchema = z.object({
  /** Give leased boards iSCSI root disks (needs root, tgt and a CoW filesystem for instant clones). */
  enabled: z.boolean().default(false),
  /** Where disks live; scripts/setup-storage.sh mounts a btrfs there. */
  dir: z.string().default('/var/lib/dozen/storage'),
  /** Disk store driver; `auto` probes `dir` (btrfs → reflink → copy) and logs its choice. */
  driver: z.enum(['auto', 'btrfs', 'reflink', 'copy']).default('auto'),
  /** Size of every lease's disk; default: the image's root disk size. */
  diskSizeMb: z.number().int().positive().optional(),
  /** Naming authority for target (`<prefix>:<board>.<lease>`) and initiator (`<prefix>:<board>`) names. */
  iqnPrefix: z.string().regex(/^iqn\.\d{4}-\d{2}\.[a-z0-9.-]+$/, 'iqn.YYYY-MM.reversed.domain').default(DEFAULT_IQN_PREFIX),
  /** Take over a storage dir that names another controller (see src/storage/identity.ts). */
  adopt: z.boolean().default(false),
  /** Quarantined disks (no lease held them at a reconcile) are removed after this many days. */
  quarantineDays: z.number().positive().default(14),
  tgt: z
    .object({
      /** tgtd management port of our own tgtd (the system tgtd uses 0; tgtd accepts at most 32767). */
      controlPort: z.number().int().min(1).max(32767).default(7),
      portalPort: z.number().int().min(1).max(65535).default(3260),
      /** O_DIRECT backing stores (measured in bench/iscsi-perf.ts; off: the page cache helps reads). */
      directIo: z.boolean().default(false),
    })
    .prefault({}),
});
export type StorageConfig = z.infer<typeof storageConfigSchema>;
