import { stat, unlink } from 'node:fs/promises';
import { log } from '../log.js';
import type { CloneOptions } from './disk-store.js';
import { run } from './run.js';
import { removeTree, StoreBase } from './store-base.js';

/** The inode number of every btrfs subvolume's root directory. */
const SUBVOLUME_INO = 256;

/**
 * btrfs: each imported image is a read-only subvolume holding its disk file; each lease disk is a
 * writable snapshot of it — one metadata operation, independent of the image's size — with a qgroup
 * limit on what the disk may reference (its size plus room for copy-on-write overhead), so one
 * lease cannot fill the pool. Quotas need `btrfs quota enable` (scripts/setup-storage.sh does it);
 * without them disks are made unlimited, with a warning.
 */
export class BtrfsDiskStore extends StoreBase {
  readonly kind = 'btrfs' as const;
  private quotas: boolean | undefined;

  protected async makeDir(path: string): Promise<void> {
    await run('btrfs', ['subvolume', 'create', path]);
  }

  protected async importFile(src: string, dst: string): Promise<void> {
    await run('cp', ['--reflink=auto', '--sparse=always', src, dst], { timeoutMs: 3_600_000 });
  }

  protected override async sealImport(dir: string): Promise<void> {
    await run('btrfs', ['property', 'set', '-ts', dir, 'ro', 'true']);
  }

  protected async cloneDir(base: string, dst: string, _opts: CloneOptions): Promise<void> {
    await run('btrfs', ['subvolume', 'snapshot', base, dst]);
    await unlink(`${dst}/image.json`).catch(() => {});
  }

  protected override async limit(dir: string, sizeBytes: number): Promise<void> {
    if (!(await this.quotasEnabled())) return;
    // Referenced bytes may exceed the file's size a little (partly overwritten extents stay whole).
    const limit = Math.ceil(sizeBytes * 1.25) + 64 * 1024 * 1024;
    await run('btrfs', ['qgroup', 'limit', String(limit), dir]);
  }

  protected async removeDir(path: string, reclaim = false): Promise<void> {
    const st = await stat(path).catch(() => null);
    if (!st) return;
    if (st.ino !== SUBVOLUME_INO) return removeTree(path);
    const id = (await run('btrfs', ['inspect-internal', 'rootid', path])).stdout.trim();
    // A deleted subvolume's space comes back once a commit has handed it to the cleaner and the cleaner
    // has dropped it. After a failed clone (maybe for want of space) wait for that (--commit-after, then
    // sync), so the rollback really leaves nothing behind; a plain destroy need not wait.
    await run('btrfs', ['subvolume', 'delete', ...(reclaim ? ['--commit-after'] : []), path]);
    if (reclaim) await run('btrfs', ['subvolume', 'sync', this.dir, id], { timeoutMs: 120_000 });
    // Newer kernels drop a deleted subvolume's qgroup themselves; older ones need this (sweep() clears the rest).
    if (await this.quotasEnabled()) await run('btrfs', ['qgroup', 'destroy', `0/${id}`, this.dir]).catch(() => {});
  }

  protected async usedBytes(dir: string): Promise<number | undefined> {
    if (!(await this.quotasEnabled())) return undefined;
    // -f: only this subvolume's qgroup; --raw: bytes. Columns: qgroupid rfer excl [max_rfer...].
    const out = await run('btrfs', ['qgroup', 'show', '-f', '--raw', dir]).catch(() => null);
    const row = out?.stdout.split('\n').find((l) => /^0\/\d+\s/.test(l));
    return row ? Number(row.trim().split(/\s+/)[2]) : undefined;
  }

  override async sweep(): Promise<string[]> {
    const done = await super.sweep();
    if (await this.quotasEnabled()) await run('btrfs', ['qgroup', 'clear-stale', this.dir]).catch(() => {});
    return done;
  }

  private async quotasEnabled(): Promise<boolean> {
    if (this.quotas === undefined) {
      this.quotas = await run('btrfs', ['qgroup', 'show', this.dir]).then(
        () => true,
        () => false,
      );
      if (!this.quotas) log.warn({ dir: this.dir }, 'storage: btrfs quotas are off, so lease disks get no size limit (run: btrfs quota enable <mountpoint>)');
    }
    return this.quotas;
  }
}
