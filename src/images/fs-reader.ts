import { execFile } from 'node:child_process';
import { copyFile, lstat, mkdtemp, readdir, realpath, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { FsKind } from './disk-layout.js';
import { BadRequestError } from '../util/errors.js';

const run = promisify(execFile);

export interface FsEntry {
  name: string;
  kind: 'file' | 'dir' | 'link' | 'other';
  size: number;
}

/** Read-only access to one file system inside a disk image, without mounting it where we can. */
export interface FsReader {
  list(dir: string): Promise<FsEntry[]>;
  /** Copy a regular file out of the image to `dest`. */
  copyOut(path: string, dest: string): Promise<void>;
  close(): Promise<void>;
}

/** Paths we hand to debugfs or join under a mount point: absolute, no `..`, no quoting tricks. */
export function checkImagePath(p: string): string {
  if (!/^\/[A-Za-z0-9._+@/-]*$/.test(p) || p.split('/').includes('..')) {
    throw new Error(`bad path inside the image: ${JSON.stringify(p)} (absolute, letters, digits and ._+@-/ only)`);
  }
  return p;
}

/**
 * ext2/3/4 through debugfs: it opens `image?offset=N` directly (e2fsprogs' unix I/O option), so no
 * loop device and no root are needed. Other file systems (FAT boot partitions) are loop-mounted
 * read-only at their offset, which needs root.
 */
export async function openFs(image: string, offset: number, size: number | null, fs: FsKind): Promise<FsReader> {
  if (fs.type === 'ext2' || fs.type === 'ext3' || fs.type === 'ext4') return debugfsReader(`${image}?offset=${offset}`);
  // Only FAT is mounted: a simple file system with no symlinks, devices or setuid bits, mounted read-only
  // with nosuid,nodev,noexec; the kernel's btrfs/xfs/squashfs drivers are not fed tenant-made images.
  if (!MOUNTABLE.has(fs.type)) {
    throw new BadRequestError(`boot files on a ${fs.type} partition cannot be read safely: put the kernel, initrd and device tree on an ext2/3/4 or FAT partition`);
  }
  return mountReader(image, offset, size, fs.type);
}

const MOUNTABLE = new Set(['vfat']);

function debugfsReader(dev: string): FsReader {
  const debugfs = async (request: string): Promise<string> => {
    const { stdout, stderr } = await run('debugfs', ['-R', request, dev], { maxBuffer: 16 * 1024 * 1024 });
    // debugfs exits 0 even when the request failed; its errors are on stderr after the banner.
    const err = stderr
      .split('\n')
      .filter((l) => l.trim() && !/^debugfs \d/.test(l))
      .join('; ');
    if (err) throw new Error(`debugfs ${request}: ${err}`);
    return stdout;
  };
  return {
    async list(dir) {
      const out = await debugfs(`ls -p ${checkImagePath(dir)}`);
      // "/ino/mode/uid/gid/name/size/" per entry
      return out
        .split('\n')
        .map((l) => l.split('/'))
        .filter((f) => f.length >= 7 && f[5] !== '.' && f[5] !== '..')
        .map((f) => {
          const type = parseInt(f[2]!, 8) & 0o170000;
          const kind = type === 0o100000 ? 'file' : type === 0o040000 ? 'dir' : type === 0o120000 ? 'link' : 'other';
          return { name: f[5]!, kind, size: Number(f[6]) || 0 };
        });
    },
    async copyOut(path, dest) {
      await debugfs(`dump ${checkImagePath(path)} ${dest}`);
      if (!(await stat(dest).catch(() => null))) throw new Error(`debugfs wrote nothing for ${path}`);
    },
    async close() {},
  };
}

async function mountReader(image: string, offset: number, size: number | null, type: string): Promise<FsReader> {
  const mnt = await mkdtemp(join(tmpdir(), 'dozen-bootfs-'));
  try {
    await run('mount', ['-t', type, '-o', `ro,nosuid,nodev,noexec,loop,offset=${offset}${size ? `,sizelimit=${size}` : ''}`, image, mnt]);
  } catch (err) {
    await rm(mnt, { recursive: true, force: true });
    const msg = ((err as { stderr?: string }).stderr ?? (err as Error).message).trim();
    throw new Error(`cannot read the ${type} partition (loop-mount read-only needs root): ${msg}`, { cause: err });
  }
  const at = (p: string) => join(mnt, checkImagePath(p));
  return {
    async list(dir) {
      const ents = await readdir(at(dir), { withFileTypes: true });
      return Promise.all(
        ents.map(async (e) => ({
          name: e.name,
          kind: e.isFile() ? 'file' : e.isDirectory() ? 'dir' : e.isSymbolicLink() ? 'link' : 'other',
          size: e.isFile() ? (await stat(join(at(dir), e.name))).size : 0,
        })),
      );
    },
    async copyOut(path, dest) {
      // Never follow a link out of the image onto the host: the file must be a regular file under mnt.
      const real = await realpath(at(path));
      if (!real.startsWith(mnt + '/') || !(await lstat(real)).isFile()) throw new BadRequestError(`${path} in the image is not a regular file inside it`);
      await copyFile(real, dest);
    },
    async close() {
      await run('umount', [mnt]).catch(() => run('umount', ['-l', mnt]));
      await rm(mnt, { recursive: true, force: true });
    },
  };
}
