import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type LoopFsKind = 'btrfs' | 'xfs' | 'ext4';

export interface LoopFs {
  kind: LoopFsKind;
  /** Mount point. */
  dir: string;
  device: string;
  cleanup(): void;
}

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 }).trim();

/**
 * A throw-away filesystem on a sparse loop file, mounted under a temp dir: btrfs (with quotas), XFS
 * (reflink=1, the mkfs default) or ext4 (no CoW). Small by default, so tests can fill it up.
 */
export function makeLoopFs(kind: LoopFsKind, sizeMiB = 256): LoopFs {
  const base = mkdtempSync(join(tmpdir(), `dozen-${kind}-`));
  const file = join(base, 'fs.img');
  const dir = join(base, 'mnt');
  mkdirSync(dir);
  sh('truncate', ['-s', `${sizeMiB}M`, file]);
  const device = sh('losetup', ['--find', '--show', file]);
  const cleanup = () => {
    try {
      sh('umount', [dir]);
    } catch {
      try {
        sh('umount', ['-l', dir]);
      } catch {
        /* not mounted */
      }
    }
    try {
      sh('losetup', ['-d', device]);
    } catch {
      /* gone */
    }
    rmSync(base, { recursive: true, force: true });
  };
  try {
    if (kind === 'btrfs') sh('mkfs.btrfs', ['-q', '-f', device]);
    else if (kind === 'xfs') sh('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', device]);
    else sh('mkfs.ext4', ['-q', '-F', device]);
    sh('mount', [device, dir]);
    if (kind === 'btrfs') sh('btrfs', ['quota', 'enable', dir]);
    return { kind, dir, device, cleanup };
  } catch (err) {
    cleanup();
    throw err;
  }
}
