import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { CloneOptions } from './disk-store.js';
import { run } from './run.js';
import { removeTree, StoreBase } from './store-base.js';

/**
 * Copy-on-write clones on any filesystem with FICLONE (XFS with reflink=1, btrfs, bcachefs...):
 * `cp --reflink=always` shares every extent with the image, so a clone takes the same few
 * milliseconds whatever the image's size. No per-disk quota: XFS project quotas would need the
 * filesystem mounted with prjquota; the disk's logical size is its natural bound.
 */
export class ReflinkDiskStore extends StoreBase {
  readonly kind = 'reflink' as const;

  protected async makeDir(path: string): Promise<void> {
    await mkdir(path);
  }

  protected async importFile(src: string, dst: string): Promise<void> {
    // Reflink when the image is on this filesystem; a sparse copy when it is not.
    await run('cp', ['--reflink=auto', '--sparse=always', src, dst], { timeoutMs: 3_600_000 });
  }

  protected async cloneDir(base: string, dst: string, _opts: CloneOptions): Promise<void> {
    await mkdir(dst);
    await run('cp', ['--reflink=always', join(base, 'disk.img'), join(dst, 'disk.img')]);
  }

  protected async removeDir(path: string): Promise<void> {
    await removeTree(path);
  }

  protected async usedBytes(dir: string): Promise<number | undefined> {
    // Allocated blocks, shared extents included: XFS cannot tell a clone's own bytes cheaply.
    const st = await stat(join(dir, 'disk.img')).catch(() => null);
    return st ? st.blocks * 512 : undefined;
  }
}
