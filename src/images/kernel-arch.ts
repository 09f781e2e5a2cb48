import { open } from 'node:fs/promises';
import { constants, gunzipSync } from 'node:zlib';
import type { Arch } from '../store/schema.js';

/** What a kernel file is, and the evidence, for messages like "an arm64 Image (magic ARM\x64 at 0x38)". */
export interface KernelKind {
  arch: Arch;
  format: 'zImage' | 'Image' | 'uImage' | 'ELF';
  evidence: string;
}

const HEAD = 64 * 1024;

/**
 * Recognise a kernel from its first bytes: ARM zImage (magic 0x016f2818 at 0x24), arm64 Image
 * ('ARM\x64' at 0x38, also inside gzip as Debian/Ubuntu ship it), U-Boot uImage (architecture byte
 * of the legacy header), ELF vmlinux (e_machine). null: none of these.
 */
export function kernelKindOf(head: Buffer, depth = 0): KernelKind | null {
  if (head.length >= 0x28 && head.readUInt32LE(0x24) === 0x016f2818) {
    return { arch: 'armv7', format: 'zImage', evidence: 'ARM zImage magic 0x016f2818 at 0x24' };
  }
  if (head.length >= 0x3c && head.readUInt32LE(0x38) === 0x644d5241) {
    return { arch: 'arm64', format: 'Image', evidence: "arm64 Image magic 'ARM\\x64' at 0x38" };
  }
  if (head.length >= 64 && head.readUInt32BE(0) === 0x27051956) {
    const arch = head[29];
    if (arch === 2) return { arch: 'armv7', format: 'uImage', evidence: 'U-Boot uImage for ARM (IH_ARCH_ARM)' };
    if (arch === 22) return { arch: 'arm64', format: 'uImage', evidence: 'U-Boot uImage for arm64 (IH_ARCH_ARM64)' };
    return null;
  }
  if (head.length >= 20 && head.toString('latin1', 0, 4) === '\x7fELF') {
    const machine = head[5] === 2 ? head.readUInt16BE(18) : head.readUInt16LE(18);
    if (machine === 40) return { arch: 'armv7', format: 'ELF', evidence: 'ELF e_machine EM_ARM (40)' };
    if (machine === 183) return { arch: 'arm64', format: 'ELF', evidence: 'ELF e_machine EM_AARCH64 (183)' };
    return null;
  }
  if (depth === 0 && head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) {
    let inner: Buffer;
    try {
      // Only the head was read: inflate what is there without insisting on the end of the stream.
      inner = gunzipSync(head, { finishFlush: constants.Z_SYNC_FLUSH });
    } catch {
      return null;
    }
    const k = kernelKindOf(inner, 1);
    return k && { ...k, evidence: `gzip'd ${k.evidence}` };
  }
  return null;
}

export async function kernelKind(file: string): Promise<KernelKind | null> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(HEAD);
    const { bytesRead } = await fh.read(buf, 0, HEAD, 0);
    return kernelKindOf(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

/** A flattened device tree starts with 0xd00dfeed (big-endian). */
export function isDeviceTree(head: Buffer): boolean {
  return head.length >= 4 && head.readUInt32BE(0) === 0xd00dfeed;
}
