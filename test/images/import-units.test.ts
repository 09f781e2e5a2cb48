/**
 * The pieces under the import: kernel recognition, partition tables and file systems, the sparse
 * writer. Disk layouts are built byte by byte here, so every field the parser reads is pinned.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { readDiskLayout, fsKindOf } from '../../src/images/disk-layout.js';
import { SparseFileWriter, sniffFormat } from '../../src/images/expand.js';
import { imageView } from '../../src/images/routes.js';
import type { Image } from '../../src/images/catalog.js';
import { defaultCmdline } from '../../src/images/import.js';
import { kernelKindOf } from '../../src/images/kernel-arch.js';

const dir = mkdtempSync(join(tmpdir(), 'import-units-'));

describe('kernel recognition', () => {
  const at = (len: number, f: (b: Buffer) => void) => {
    const b = Buffer.alloc(len);
    f(b);
    return b;
  };
  it('ARM zImage → armv7', () => {
    expect(kernelKindOf(at(4096, (b) => b.writeUInt32LE(0x016f2818, 0x24)))).toMatchObject({ arch: 'armv7', format: 'zImage' });
  });
  it("arm64 Image ('ARM\\x64' at 0x38), plain and gzip'd → arm64", () => {
    const img = at(4096, (b) => b.write('ARM\x64', 0x38, 'latin1'));
    expect(kernelKindOf(img)).toMatchObject({ arch: 'arm64', format: 'Image' });
    // Only the head of a big gzip'd kernel is read: it must be enough.
    const gz = gzipSync(Buffer.concat([img, Buffer.alloc(4 << 20, 1)]));
    expect(kernelKindOf(gz.subarray(0, 64 * 1024))).toMatchObject({ arch: 'arm64', evidence: expect.stringMatching(/^gzip'd/) });
  });
  it('uImage and ELF by their architecture fields', () => {
    const uimage = (arch: number) => at(4096, (b) => (b.writeUInt32BE(0x27051956, 0), (b[29] = arch)));
    expect(kernelKindOf(uimage(2))?.arch).toBe('armv7');
    expect(kernelKindOf(uimage(22))?.arch).toBe('arm64');
    expect(kernelKindOf(uimage(3))).toBeNull(); // x86
    const elf = (machine: number) => at(4096, (b) => (b.write('\x7fELF', 0, 'latin1'), (b[5] = 1), b.writeUInt16LE(machine, 18)));
    expect(kernelKindOf(elf(40))?.arch).toBe('armv7');
    expect(kernelKindOf(elf(183))?.arch).toBe('arm64');
    expect(kernelKindOf(elf(62))).toBeNull(); // x86-64
  });
  it('anything else → null', () => {
    expect(kernelKindOf(Buffer.alloc(4096, 0x90))).toBeNull();
    expect(kernelKindOf(Buffer.alloc(10))).toBeNull();
    expect(kernelKindOf(gzipSync(Buffer.from('not a kernel')))).toBeNull();
  });
});

describe('container formats', () => {
  it('are told by magic, raw otherwise', () => {
    expect(sniffFormat(Buffer.from('fd377a585a0000', 'hex'))).toBe('xz');
    expect(sniffFormat(gzipSync(Buffer.from('x')))).toBe('gz');
    expect(sniffFormat(Buffer.from('28b52ffd00', 'hex'))).toBe('zst');
    expect(sniffFormat(Buffer.from('QFI\xfb\0\0\0\x03', 'latin1'))).toBe('qcow2');
    expect(sniffFormat(Buffer.alloc(512))).toBe('raw');
  });
});

/** GUID text → on-disk bytes (first three fields little-endian). */
function guidBytes(g: string): Buffer {
  const h = g.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
}

function ext4Superblock(uuid: string, label: string): Buffer {
  const b = Buffer.alloc(2048);
  b.writeUInt16LE(0xef53, 1024 + 56);
  b.writeUInt32LE(0x4, 1024 + 92); // has_journal
  b.writeUInt32LE(0x2c2, 1024 + 96); // filetype, extents, 64bit, flex_bg
  Buffer.from(uuid.replace(/-/g, ''), 'hex').copy(b, 1024 + 104);
  b.write(label, 1024 + 120, 'latin1');
  return b;
}

function disk(name: string, size: number, writes: Array<[number, Buffer]>): string {
  const f = join(dir, name);
  const fd = openSync(f, 'w');
  for (const [off, buf] of writes) writeSync(fd, buf, 0, buf.length, off);
  ftruncateSync(fd, size);
  closeSync(fd);
  return f;
}

describe('disk layouts', () => {
  it('GPT: partitions with their type names, names, PARTUUIDs and file systems', async () => {
    const partUuid = randomUUID();
    const fsUuid = randomUUID();
    const hdr = Buffer.alloc(512);
    hdr.write('EFI PART', 0, 'latin1');
    guidBytes(randomUUID()).copy(hdr, 56);
    hdr.writeBigUInt64LE(2n, 72); // entries at LBA 2
    hdr.writeUInt32LE(128, 80);
    hdr.writeUInt32LE(128, 84);
    const entry = (type: string, uuid: string, first: number, last: number, name: string, attrs = 0n) => {
      const e = Buffer.alloc(128);
      guidBytes(type).copy(e, 0);
      guidBytes(uuid).copy(e, 16);
      e.writeBigUInt64LE(BigInt(first), 32);
      e.writeBigUInt64LE(BigInt(last), 40);
      e.writeBigUInt64LE(attrs, 48);
      e.write(name, 56, 'utf16le');
      return e;
    };
    const pmbr = Buffer.alloc(512);
    pmbr[446 + 4] = 0xee;
    pmbr.writeUInt32LE(1, 446 + 8);
    pmbr.writeUInt32LE(0xffffffff, 446 + 12);
    pmbr[510] = 0x55;
    pmbr[511] = 0xaa;
    const f = disk('gpt.img', 8 << 20, [
      [0, pmbr],
      [512, hdr],
      [1024, entry('c12a7328-f81f-11d2-ba4b-00a0c93ec93b', randomUUID(), 2048, 4095, 'ESP', 4n)],
      [1024 + 128, entry('69dad710-2ce4-4e3c-b16c-21a1d49abed3', partUuid, 4096, 16383, 'root')],
      [4096 * 512, ext4Superblock(fsUuid, 'rootfs')],
    ]);
    const layout = await readDiskLayout(f);
    expect(layout).toMatchObject({
      table: 'gpt',
      partitions: [
        { index: 1, start: 2048 * 512, size: 2048 * 512, typeName: 'EFI System', name: 'ESP', bootable: true, fs: null },
        { index: 2, start: 4096 * 512, size: 12288 * 512, typeName: 'Linux root (ARM)', name: 'root', partuuid: partUuid, fs: { type: 'ext4', uuid: fsUuid, label: 'rootfs' } },
      ],
    });
    expect(defaultCmdline(layout!)).toBe(`console={{console}} root=PARTUUID=${partUuid} rw`);
  });

  it('MBR with an extended partition: logical partitions count from 5', async () => {
    const mbr = Buffer.alloc(512);
    mbr.writeUInt32LE(0xcafef00d, 440);
    const put = (b: Buffer, off: number, type: number, lba: number, sectors: number) => {
      b[off + 4] = type;
      b.writeUInt32LE(lba, off + 8);
      b.writeUInt32LE(sectors, off + 12);
    };
    put(mbr, 446, 0x0c, 2048, 2048); // FAT32 LBA
    put(mbr, 462, 0x05, 4096, 8192); // extended
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    const ebr1 = Buffer.alloc(512);
    put(ebr1, 446, 0x83, 2048, 2048); // relative to this EBR (4096) → 6144
    put(ebr1, 462, 0x05, 4096, 4096); // next EBR at 4096 + 4096
    ebr1[510] = 0x55;
    ebr1[511] = 0xaa;
    const ebr2 = Buffer.alloc(512);
    put(ebr2, 446, 0x83, 2048, 1024); // → 8192 + 2048
    ebr2[510] = 0x55;
    ebr2[511] = 0xaa;
    const f = disk('mbr-ext.img', 16 << 20, [
      [0, mbr],
      [4096 * 512, ebr1],
      [8192 * 512, ebr2],
      [6144 * 512, ext4Superblock(randomUUID(), 'big')],
    ]);
    const layout = await readDiskLayout(f);
    expect(layout?.table).toBe('mbr');
    expect(layout!.partitions.map((p) => [p.index, p.start / 512, p.size / 512, p.type, p.partuuid])).toEqual([
      [1, 2048, 2048, '0c', 'cafef00d-01'],
      [5, 6144, 2048, '83', 'cafef00d-05'],
      [6, 10240, 1024, '83', 'cafef00d-06'],
    ]);
    expect(defaultCmdline(layout!)).toBe('console={{console}} root=PARTUUID=cafef00d-05 rw');
  });

  it('a partition past the end of the image (a truncated download) is an error, not a layout', async () => {
    const mbr = Buffer.alloc(512);
    mbr[446 + 4] = 0x83;
    mbr.writeUInt32LE(2048, 446 + 8);
    mbr.writeUInt32LE(1 << 20, 446 + 12);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    await expect(readDiskLayout(disk('short.img', 4 << 20, [[0, mbr]]))).rejects.toThrow(/past the end .* \(truncated\?\)/);
  });

  it('a FAT boot sector is a file system, not a partition table; zeros are nothing', async () => {
    const bs = Buffer.alloc(512);
    bs[0] = 0xeb;
    bs.write('FAT32   ', 82, 'latin1');
    bs.writeUInt32LE(0x1a2b3c4d, 67);
    bs.write('BOOT       ', 71, 'latin1');
    bs[510] = 0x55;
    bs[511] = 0xaa;
    expect(fsKindOf(bs)).toEqual({ type: 'vfat', uuid: '1A2B-3C4D', label: 'BOOT' });
    expect(await readDiskLayout(disk('fat.img', 2 << 20, [[0, bs]]))).toMatchObject({ table: 'none', fs: { type: 'vfat' } });
    expect(await readDiskLayout(disk('zeros.img', 2 << 20, []))).toBeNull();
  });
});

describe('SparseFileWriter', () => {
  it('writes the same bytes, leaves holes for zero runs, and refuses to grow past its limit', async () => {
    const data = Buffer.alloc(8 << 20);
    data.fill(7, 100, 5000);
    data.fill(9, (6 << 20) + 3, (6 << 20) + 70_000);
    data[data.length - 1] = 1;
    const f = join(dir, 'sparse.out');
    // Odd chunk sizes, so blocks straddle chunks.
    const chunks = [];
    for (let off = 0; off < data.length; off += 333_333) chunks.push(data.subarray(off, off + 333_333));
    await pipeline(Readable.from(chunks), new SparseFileWriter(f, 1 << 30));
    expect(readFileSync(f).equals(data)).toBe(true);
    expect(statSync(f).blocks * 512).toBeLessThan(1 << 20);
    await expect(pipeline(Readable.from(chunks), new SparseFileWriter(join(dir, 'big.out'), 4 << 20))).rejects.toThrow(/more than the limit/);
  });
});

describe('image views', () => {
  it('an import’s source path on the server is the admin’s: tenants see "(server)"', () => {
    const img = { name: 'x', dir: '/srv/images/x', manifest: { name: 'x', arch: 'armv7', kernel: 'vmlinuz', cmdline: '', imported: { at: '2026-12-04T00:00:00Z', source: '/srv/uploads/customer-a/x.img', format: 'raw' } } } as unknown as Image;
    expect(imageView(img, true).imported).toMatchObject({ source: '/srv/uploads/customer-a/x.img' });
    expect(imageView(img, false).imported).toEqual({ at: '2026-12-04T00:00:00Z', source: '(server)', format: 'raw' });
    expect(JSON.stringify(imageView(img, false))).not.toContain('/srv/uploads');
  });
});
