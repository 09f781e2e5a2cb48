import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A minimal ELF header of a binary for `arch` (enough for the store's architecture check). */
export function elfHeader(arch: 'armv7' | 'arm64' | 'x86-64'): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = arch === 'armv7' ? 1 : 2; // class
  b[5] = 1; // little-endian
  b[6] = 1;
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(arch === 'armv7' ? 40 : arch === 'arm64' ? 183 : 62, 18);
  return b;
}

export interface RootImage {
  path: string;
  sha256: string;
  sizeBytes: number;
}

/**
 * An ext4 root disk image like an image build makes: a sparse file holding /bin/busybox (an ELF header
 * of `arch`), /etc/hello, and optionally `dataMiB` of incompressible data in /data (to make copies cost).
 */
export function makeRootImage(path: string, opts: { sizeMiB?: number; arch?: 'armv7' | 'arm64' | 'x86-64'; dataMiB?: number; hello?: string } = {}): RootImage {
  const src = mkdtempSync(join(tmpdir(), 'rootfs-'));
  try {
    mkdirSync(join(src, 'bin'));
    mkdirSync(join(src, 'etc'));
    writeFileSync(join(src, 'bin/busybox'), elfHeader(opts.arch ?? 'armv7'));
    writeFileSync(join(src, 'etc/hello'), opts.hello ?? 'hello from the image\n');
    if (opts.dataMiB) {
      const chunk = randomBytes(1024 * 1024);
      const buf = Buffer.alloc(opts.dataMiB * 1024 * 1024);
      for (let i = 0; i < opts.dataMiB; i++) {
        chunk.writeUInt32LE(i, 0); // every MiB different: nothing to deduplicate
        chunk.copy(buf, i * 1024 * 1024);
      }
      writeFileSync(join(src, 'data'), buf);
    }
    execFileSync('truncate', ['-s', `${opts.sizeMiB ?? 32}M`, path]);
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', src, path], { stdio: 'pipe' });
  } finally {
    rmSync(src, { recursive: true, force: true });
  }
  const sha256 = createHash('sha256').update(readFileSync(path)).digest('hex');
  return { path, sha256, sizeBytes: (opts.sizeMiB ?? 32) * 1024 * 1024 };
}

/** Reads a file out of an ext2/3/4 image (debugfs), or null when it is not there. */
export function readFromImage(image: string, file: string): string | null {
  const out = execFileSync('debugfs', ['-R', `cat ${file}`, image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const err = execFileSync('debugfs', ['-R', `stat ${file}`, image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return /Inode:/.test(err) ? out : null;
}

/** Writes a file into an ext2/3/4 image (debugfs -w), as a board would write to its disk. */
export function writeToImage(image: string, file: string, content: string): void {
  const tmp = join(mkdtempSync(join(tmpdir(), 'put-')), 'f');
  writeFileSync(tmp, content);
  execFileSync('debugfs', ['-w', '-R', `write ${tmp} ${file}`, image], { stdio: 'pipe' });
  rmSync(tmp, { force: true });
}
