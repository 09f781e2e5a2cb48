import { spawn } from 'node:child_process';
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { CloneOptions } from './disk-store.js';
import { run } from './run.js';
import { removeTree, StoreBase } from './store-base.js';

/**
 * The fallback for filesystems without copy-on-write: every disk is a full copy. Sparse-aware
 * (`cp --sparse=always`: holes stay holes, so an image that is mostly empty copies quickly) and
 * never a reflink (`--reflink=never`, so it measures and behaves the same everywhere).
 */
export class CopyDiskStore extends StoreBase {
  readonly kind = 'copy' as const;

  protected async makeDir(path: string): Promise<void> {
    await mkdir(path);
  }

  protected async importFile(src: string, dst: string): Promise<void> {
    await run('cp', ['--reflink=never', '--sparse=always', src, dst], { timeoutMs: 3_600_000 });
  }

  protected async cloneDir(base: string, dst: string, opts: CloneOptions & { totalBytes: number }): Promise<void> {
    await mkdir(dst);
    await copyWithProgress(join(base, 'disk.img'), join(dst, 'disk.img'), opts.totalBytes, opts.onProgress);
  }

  protected async removeDir(path: string): Promise<void> {
    await removeTree(path);
  }

  protected async usedBytes(dir: string): Promise<number | undefined> {
    const st = await stat(join(dir, 'disk.img')).catch(() => null);
    return st ? st.blocks * 512 : undefined;
  }
}

/** `cp` with the destination's growing size reported every 250 ms (cp itself has no progress output). */
function copyWithProgress(src: string, dst: string, total: number, onProgress?: (done: number, total: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('cp', ['--reflink=never', '--sparse=always', src, dst], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = onProgress
      ? setInterval(() => {
          stat(dst).then((s) => onProgress(Math.min(s.size, total), total), () => {});
        }, 250)
      : undefined;
    child.on('error', reject);
    child.on('close', (code) => {
      if (timer) clearInterval(timer);
      if (code === 0) return resolve();
      const err = new Error(`cp ${src} ${dst}: ${stderr.trim() || `exit ${code}`}`) as Error & { stderr: string };
      err.stderr = stderr;
      reject(err);
    });
  });
}
