import { randomBytes } from 'node:crypto';
import { constants, copyFile, mkdir, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { log } from '../log.js';
import { BtrfsDiskStore } from './btrfs-store.js';
import { CopyDiskStore } from './copy-store.js';
import { DISK_STORE_KINDS, type DiskStore, type DiskStoreKind } from './disk-store.js';
import { ReflinkDiskStore } from './reflink-store.js';
import { run } from './run.js';

/** Every store driver, so the compiler sees them all and an unknown name lists the valid ones. */
export const DISK_STORES: Record<DiskStoreKind, (dir: string) => DiskStore> = {
  btrfs: (dir) => new BtrfsDiskStore(dir),
  reflink: (dir) => new ReflinkDiskStore(dir),
  copy: (dir) => new CopyDiskStore(dir),
};

const BTRFS_MAGIC = 0x9123683e;

/** Why `kind` cannot work in `dir`, or null when it can. */
export async function probeDiskStore(kind: DiskStoreKind, dir: string): Promise<string | null> {
  await mkdir(dir, { recursive: true });
  if (kind === 'copy') return null;
  if (kind === 'btrfs') {
    if ((await statfs(dir)).type !== BTRFS_MAGIC) return `${dir} is not on btrfs`;
    return run('btrfs', ['--version']).then(
      () => null,
      () => 'the btrfs tool is missing (apt-get install btrfs-progs)',
    );
  }
  // reflink: try it. FICLONE_FORCE fails instead of falling back to a copy.
  const a = join(dir, `.probe-${randomBytes(4).toString('hex')}`);
  try {
    await writeFile(a, randomBytes(4096));
    await copyFile(a, `${a}.clone`, constants.COPYFILE_FICLONE_FORCE);
    return null;
  } catch (err) {
    return `${dir} does not support reflinks (FICLONE: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  } finally {
    await rm(a, { force: true });
    await rm(`${a}.clone`, { force: true });
  }
}

/**
 * Opens the disk store for `dir`. `auto` probes the directory: btrfs (snapshots + qgroups) on btrfs,
 * reflink where FICLONE works, else copy — and logs which one and why. A named driver that cannot
 * work there is an error, not a silent fallback.
 */
export async function openDiskStore(dir: string, driver: DiskStoreKind | 'auto' = 'auto'): Promise<{ store: DiskStore; reason: string }> {
  if (driver !== 'auto' && !(DISK_STORE_KINDS as readonly string[]).includes(driver)) {
    throw new Error(`unknown disk store driver "${driver}" (valid: auto, ${DISK_STORE_KINDS.join(', ')})`);
  }
  if (driver !== 'auto') {
    const why = await probeDiskStore(driver, dir);
    if (why) throw new Error(`disk store "${driver}" cannot be used: ${why}`);
    return pick(driver, dir, 'configured');
  }
  const notBtrfs = await probeDiskStore('btrfs', dir);
  if (!notBtrfs) return pick('btrfs', dir, 'directory is on btrfs');
  const noReflink = await probeDiskStore('reflink', dir);
  if (!noReflink) return pick('reflink', dir, `${notBtrfs}, but it supports reflinks`);
  return pick('copy', dir, `${notBtrfs}; ${noReflink}: full copies (slow for big images)`);
}

function pick(kind: DiskStoreKind, dir: string, reason: string): { store: DiskStore; reason: string } {
  log.info({ dir, driver: kind, reason }, `storage: disk store ${kind} (${reason})`);
  return { store: DISK_STORES[kind](dir), reason };
}
