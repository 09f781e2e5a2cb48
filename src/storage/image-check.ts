import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat, truncate } from 'node:fs/promises';
import { StorageError, type ImageDisk } from './disk-store.js';
import { isNoSpace, run } from './run.js';

/** What a root disk is: a bare ext2/3/4 filesystem, or a partitioned disk (MBR or GPT). */
export type DiskFormat = 'ext' | 'mbr' | 'gpt';

/** Recognises the disk's format from its first sectors; null when it is none we know. */
export async function diskFormat(path: string): Promise<DiskFormat | null> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(2048);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    if (bytesRead >= 1082 && buf.readUInt16LE(1024 + 56) === 0xef53) return 'ext';
    if (bytesRead >= 520 && buf.toString('latin1', 512, 520) === 'EFI PART') return 'gpt';
    if (bytesRead >= 512 && buf[510] === 0x55 && buf[511] === 0xaa) return 'mbr';
    return null;
  } finally {
    await fh.close();
  }
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** ELF (class, machine) per image arch: what the binaries inside a root disk must be. */
const ELF_ARCH: Record<string, { cls: number; machine: number }> = {
  armv7: { cls: 1, machine: 40 }, // ELFCLASS32, EM_ARM
  arm64: { cls: 2, machine: 183 }, // ELFCLASS64, EM_AARCH64
};
const ELF_NAMES: Record<number, string> = { 3: 'x86', 40: 'ARM', 62: 'x86-64', 183: 'AArch64', 243: 'RISC-V' };
/** Binaries that almost every Linux root filesystem has; the first one found decides. */
const PROBE_BINARIES = ['/bin/busybox', '/usr/bin/busybox', '/usr/bin/ls', '/bin/ls', '/usr/bin/env', '/sbin/init'];

/** The ELF header of the first probe binary found inside an ext2/3/4 image (read with debugfs), or null. */
async function firstElfHeader(path: string): Promise<{ file: string; cls: number; machine: number } | null> {
  for (const file of PROBE_BINARIES) {
    const out = await new Promise<Buffer>((res) =>
      execFile('debugfs', ['-R', `cat ${file}`, path], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024, timeout: 30_000 }, (_err, stdout) =>
        res(stdout ?? Buffer.alloc(0)),
      ),
    );
    if (out.length >= 20 && out.readUInt32BE(0) === 0x7f454c46) return { file, cls: out[4]!, machine: out.readUInt16LE(18) };
  }
  return null;
}

/**
 * Checks an image's root disk once, when a store imports it (the copy inside the store is what gets
 * checked, so what is verified is what gets cloned): the manifest's SHA-256, a known format, a clean
 * ext2/3/4 filesystem (`e2fsck -fn`, read-only), and binaries of the image's architecture.
 */
export async function checkImageDisk(path: string, src: ImageDisk): Promise<DiskFormat> {
  const st = await stat(path);
  if (st.size < 4096) throw new StorageError('CORRUPT_IMAGE', `image ${src.image}: root disk ${src.path} is ${st.size} bytes, too small to be a disk`);
  if (src.sha256) {
    const got = await sha256File(path);
    if (got !== src.sha256.toLowerCase()) {
      throw new StorageError('CORRUPT_IMAGE', `image ${src.image}: root disk ${src.path} is corrupt (sha256 ${got.slice(0, 16)}…, manifest says ${src.sha256.slice(0, 16)}…)`);
    }
  }
  const format = await diskFormat(path);
  if (!format) {
    throw new StorageError('CORRUPT_IMAGE', `image ${src.image}: root disk ${src.path} is neither an ext2/3/4 filesystem nor a partitioned (MBR/GPT) disk`);
  }
  if (format !== 'ext') return format;
  // -f: check even if marked clean; -n: open read-only and answer "no". Exit 0 = clean, 4 = errors left.
  const fsck = await run('e2fsck', ['-fn', path], { okCodes: [1, 2, 4, 8, 12, 16, 32], timeoutMs: 300_000 });
  if (fsck.code !== 0) {
    const why = fsck.stdout.trim().split('\n').filter(Boolean).slice(0, 3).join('; ');
    throw new StorageError('CORRUPT_IMAGE', `image ${src.image}: root filesystem in ${src.path} has errors (e2fsck exit ${fsck.code}: ${why})`);
  }
  const want = src.arch ? ELF_ARCH[src.arch] : undefined;
  if (want) {
    const elf = await firstElfHeader(path);
    if (elf && (elf.cls !== want.cls || elf.machine !== want.machine)) {
      const got = `${ELF_NAMES[elf.machine] ?? `machine ${elf.machine}`} ${elf.cls === 2 ? '64' : '32'}-bit`;
      throw new StorageError('WRONG_ARCH', `image ${src.image}: its root disk holds ${got} binaries (${elf.file}) but the manifest says ${src.arch}`);
    }
  }
  return format;
}

/**
 * Grows a disk file to `sizeBytes`. A bare ext2/3/4 filesystem is grown with it (resize2fs, offline,
 * at clone time — so any image boots with its whole disk, without a resize step of its own); a
 * partitioned disk only gets the extra space after its last partition, for the OS to claim.
 */
export async function growDisk(path: string, sizeBytes: number, format: DiskFormat | null): Promise<void> {
  try {
    await truncate(path, sizeBytes);
    // -f: the image was checked when imported; a fresh clone of it needs no second e2fsck.
    if (format === 'ext') await run('resize2fs', ['-f', path], { timeoutMs: 300_000 });
  } catch (err) {
    if (isNoSpace(err)) throw new StorageError('ENOSPC', `no space to grow disk ${path} to ${sizeBytes} bytes`, { cause: err });
    throw err;
  }
}
