import { open, type FileHandle } from 'node:fs/promises';

/**
 * What is on a raw disk image: a partition table (MBR or GPT) or a file system spanning the whole
 * image. Parsed here rather than with sfdisk/parted: both tables are a few fixed-layout structures,
 * and reading them needs no extra host package and no root.
 */
export interface Partition {
  /** 1-based, as Linux numbers them (MBR logical partitions start at 5). */
  index: number;
  /** Byte offset and size in the image. */
  start: number;
  size: number;
  /** MBR type byte as hex ("83") or GPT type GUID, with a name when we know it. */
  type: string;
  typeName?: string;
  bootable: boolean;
  name?: string;
  /** What `root=PARTUUID=` matches: GPT unique GUID, or MBR `<disk signature>-<NN>`. */
  partuuid?: string;
  /** File system found at the partition's start, if recognised. */
  fs: FsKind | null;
}

export interface FsKind {
  type: 'ext2' | 'ext3' | 'ext4' | 'vfat' | 'btrfs' | 'xfs' | 'squashfs' | 'swap';
  uuid?: string;
  label?: string;
}

export type DiskLayout =
  | { table: 'mbr' | 'gpt'; diskId: string; partitions: Partition[] }
  | { table: 'none'; fs: FsKind; partitions: [] };

const SECTOR = 512;

async function readAt(fh: FileHandle, pos: number, len: number): Promise<Buffer> {
  const buf = Buffer.alloc(len);
  const { bytesRead } = await fh.read(buf, 0, len, pos);
  return buf.subarray(0, bytesRead);
}

/** Recognise a file system from the first 68 KiB at its start. */
export function fsKindOf(b: Buffer): FsKind | null {
  const sb = 1024; // ext superblock
  if (b.length >= sb + 136 && b.readUInt16LE(sb + 56) === 0xef53) {
    const compat = b.readUInt32LE(sb + 92);
    const incompat = b.readUInt32LE(sb + 96);
    // extents (0x40), 64bit (0x80), flex_bg (0x200) → ext4; a journal (compat 0x4) → ext3
    const type = incompat & 0x2c0 ? 'ext4' : compat & 0x4 ? 'ext3' : 'ext2';
    return { type, uuid: uuidBE(b.subarray(sb + 104, sb + 120)), label: cstr(b.subarray(sb + 120, sb + 136)) };
  }
  if (b.length >= 512 && b[510] === 0x55 && b[511] === 0xaa && (b[0] === 0xeb || b[0] === 0xe9)) {
    const fat32 = b.toString('latin1', 82, 87) === 'FAT32';
    if (fat32 || b.toString('latin1', 54, 57) === 'FAT') {
      const at = fat32 ? 67 : 39; // volume serial
      const serial = b.readUInt32LE(at).toString(16).padStart(8, '0').toUpperCase();
      return { type: 'vfat', uuid: `${serial.slice(0, 4)}-${serial.slice(4)}`, label: b.toString('latin1', at + 4, at + 15).trim() };
    }
  }
  if (b.length >= 0x10048 && b.toString('latin1', 0x10040, 0x10048) === '_BHRfS_M') return { type: 'btrfs' };
  if (b.length >= 4 && b.toString('latin1', 0, 4) === 'XFSB') return { type: 'xfs' };
  if (b.length >= 4 && b.toString('latin1', 0, 4) === 'hsqs') return { type: 'squashfs' };
  if (b.length >= 4096 && b.toString('latin1', 4086, 4096) === 'SWAPSPACE2') return { type: 'swap' };
  return null;
}

export async function fsKindAt(fh: FileHandle, offset: number): Promise<FsKind | null> {
  return fsKindOf(await readAt(fh, offset, 0x10048));
}

/** Reads the layout of a raw disk image; null when it is neither a partitioned disk nor a file system. */
export async function readDiskLayout(file: string): Promise<DiskLayout | null> {
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const whole = await fsKindAt(fh, 0);
    if (whole) return { table: 'none', fs: whole, partitions: [] };
    const mbr = await readAt(fh, 0, SECTOR);
    if (mbr.length < SECTOR || mbr[510] !== 0x55 || mbr[511] !== 0xaa) return null;
    const entries = [0, 1, 2, 3].map((i) => mbrEntry(mbr, 446 + i * 16));
    if (entries.some((e) => e.type === 0xee)) return await readGpt(fh, size);
    // A boot sector's code where the entries should be is not a partition table.
    if (entries.some((e) => e.status !== 0 && e.status !== 0x80)) return null;
    const diskId = mbr.readUInt32LE(440).toString(16).padStart(8, '0');
    const parts: Partition[] = [];
    const add = async (index: number, e: MbrEntry, base: number) => {
      const start = (base + e.lba) * SECTOR;
      const psize = e.sectors * SECTOR;
      if (start + psize > size) throw new Error(`partition ${index} ends at byte ${start + psize}, past the end of the ${size}-byte image (truncated?)`);
      parts.push({
        index,
        start,
        size: psize,
        type: e.type.toString(16).padStart(2, '0'),
        typeName: MBR_TYPES[e.type],
        bootable: e.status === 0x80,
        partuuid: `${diskId}-${String(index).padStart(2, '0')}`,
        fs: await fsKindAt(fh, start),
      });
    };
    let logical = 5;
    for (const [i, e] of entries.entries()) {
      if (!e.type || !e.sectors) continue;
      if (EXTENDED.has(e.type)) {
        // Logical partitions: a chain of EBRs, each relative to the extended partition's start.
        let ebrLba = 0;
        for (let hops = 0; hops < 128; hops++) {
          const ebr = await readAt(fh, (e.lba + ebrLba) * SECTOR, SECTOR);
          if (ebr.length < SECTOR || ebr[510] !== 0x55 || ebr[511] !== 0xaa) break;
          const cur = mbrEntry(ebr, 446);
          const next = mbrEntry(ebr, 462);
          if (cur.type && cur.sectors) await add(logical++, cur, e.lba + ebrLba);
          if (!next.type || !next.lba) break;
          ebrLba = next.lba;
        }
      } else {
        await add(i + 1, e, 0);
      }
    }
    if (!parts.length) return null;
    return { table: 'mbr', diskId, partitions: parts };
  } finally {
    await fh.close();
  }
}

interface MbrEntry {
  status: number;
  type: number;
  lba: number;
  sectors: number;
}
const mbrEntry = (b: Buffer, off: number): MbrEntry => ({
  status: b[off]!,
  type: b[off + 4]!,
  lba: b.readUInt32LE(off + 8),
  sectors: b.readUInt32LE(off + 12),
});
const EXTENDED = new Set([0x05, 0x0f, 0x85]);
const MBR_TYPES: Record<number, string> = {
  0x0b: 'W95 FAT32',
  0x0c: 'W95 FAT32 (LBA)',
  0x0e: 'W95 FAT16 (LBA)',
  0x06: 'FAT16',
  0x82: 'Linux swap',
  0x83: 'Linux',
  0xef: 'EFI (FAT)',
};

async function readGpt(fh: FileHandle, size: number): Promise<DiskLayout | null> {
  const hdr = await readAt(fh, SECTOR, SECTOR);
  if (hdr.toString('latin1', 0, 8) !== 'EFI PART') return null;
  const entriesLba = Number(hdr.readBigUInt64LE(72));
  const count = hdr.readUInt32LE(80);
  const esize = hdr.readUInt32LE(84);
  if (esize < 128 || count > 1024) throw new Error(`GPT header is implausible (${count} entries of ${esize} bytes)`);
  const diskId = guid(hdr.subarray(56, 72));
  const table = await readAt(fh, entriesLba * SECTOR, count * esize);
  const parts: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const e = table.subarray(i * esize, (i + 1) * esize);
    if (e.length < 128 || e.subarray(0, 16).every((x) => x === 0)) continue;
    const type = guid(e.subarray(0, 16));
    const first = Number(e.readBigUInt64LE(32));
    const last = Number(e.readBigUInt64LE(40));
    const start = first * SECTOR;
    const psize = (last - first + 1) * SECTOR;
    if (start + psize > size) throw new Error(`partition ${i + 1} ends at byte ${start + psize}, past the end of the ${size}-byte image (truncated?)`);
    parts.push({
      index: i + 1,
      start,
      size: psize,
      type,
      typeName: GPT_TYPES[type],
      // Legacy BIOS bootable attribute (bit 2), which U-Boot's distro boot also honours.
      bootable: (e.readBigUInt64LE(48) & 4n) !== 0n,
      name: e.toString('utf16le', 56, 128).replace(/\0.*$/s, '') || undefined,
      partuuid: guid(e.subarray(16, 32)),
      fs: await fsKindAt(fh, start),
    });
  }
  return parts.length ? { table: 'gpt', diskId, partitions: parts } : null;
}

const GPT_TYPES: Record<string, string> = {
  'c12a7328-f81f-11d2-ba4b-00a0c93ec93b': 'EFI System',
  'bc13c2ff-59e6-4262-a352-b275fd6f7172': 'Linux extended boot',
  '0fc63daf-8483-4772-8e79-3d69d8477de4': 'Linux filesystem',
  '69dad710-2ce4-4e3c-b16c-21a1d49abed3': 'Linux root (ARM)',
  'b921b045-1df0-41c3-af44-4c6f280d3fae': 'Linux root (ARM64)',
  '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f': 'Linux swap',
  'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7': 'Microsoft basic data',
};

/** GPT GUIDs: the first three fields are little-endian. */
function guid(b: Buffer): string {
  const h = (s: Buffer) => s.toString('hex');
  const le = (s: Buffer) => h(Buffer.from(s).reverse());
  return `${le(b.subarray(0, 4))}-${le(b.subarray(4, 6))}-${le(b.subarray(6, 8))}-${h(b.subarray(8, 10))}-${h(b.subarray(10, 16))}`;
}

function uuidBE(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function cstr(b: Buffer): string | undefined {
  return b.toString('latin1').replace(/\0.*$/s, '') || undefined;
}
