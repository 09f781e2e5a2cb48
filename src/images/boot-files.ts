import { posix } from 'node:path';
import type { DiskLayout, FsKind, Partition } from './disk-layout.js';
import { checkImagePath, openFs, type FsEntry, type FsReader } from './fs-reader.js';

/**
 * Device trees an import looks for when none are named, keyed by the board-model key that
 * src/inventory/models.ts gives (`dtb: 'bananapi'`). Keep the two in step when a model is added.
 */
export const DEFAULT_DTBS: Record<string, string> = {
  bananapi: 'sun7i-a20-bananapi.dtb',
  bananapro: 'sun7i-a20-bananapro.dtb',
};

export interface BootRequest {
  /** 1-based partition number; default: the first that holds a kernel (bootable ones first). */
  partition?: number;
  /** Paths inside that file system; default: found by name in / and /boot. */
  kernel?: string;
  initrd?: string;
  dtbs?: Record<string, string>;
}

export interface FoundBootFiles {
  /** Where they were found, for the job's notes: "partition 1 (ext4)" or "the disk's file system (ext4)". */
  where: string;
  partition: number | null;
  kernel: string;
  initrd?: string;
  dtbs: Record<string, string>;
  reader: FsReader;
}

const KERNEL_RE = /^(vmlinuz|zImage|Image|uImage)(-.+)?$/;
const INITRD_RE = /^(initrd\.img|initrd|initramfs)(-.+?)?(\.img)?$/;
const READABLE = new Set<FsKind['type']>(['ext2', 'ext3', 'ext4', 'vfat']);

/** The candidate file systems, bootable and boot-ish partitions first. */
function candidates(layout: DiskLayout, want: number | undefined): Array<{ offset: number; size: number; fs: FsKind; where: string; partition: number | null }> {
  if (layout.table === 'none') return [{ offset: 0, size: Infinity, fs: layout.fs, where: `the disk's file system (${layout.fs.type})`, partition: null }];
  const parts = layout.partitions;
  if (want !== undefined) {
    const p = parts.find((x) => x.index === want);
    if (!p) throw new Error(`partition ${want} does not exist (the disk has ${parts.map((x) => x.index).join(', ')})`);
    if (!p.fs || !READABLE.has(p.fs.type)) throw new Error(`partition ${want} holds ${p.fs?.type ?? 'no file system we recognise'}; boot files can be read from ext2/3/4 or FAT`);
  }
  const rank = (p: Partition) => (p.bootable ? 0 : /EFI|boot|FAT/i.test(p.typeName ?? '') || p.fs?.type === 'vfat' ? 1 : 2);
  return parts
    .filter((p) => (want === undefined ? p.fs && READABLE.has(p.fs.type) : p.index === want))
    .sort((a, b) => rank(a) - rank(b) || a.index - b.index)
    .map((p) => ({ offset: p.start, size: p.size, fs: p.fs!, where: `partition ${p.index} (${p.fs!.type})`, partition: p.index }));
}

/** Version-aware comparison so vmlinuz-6.1.0-10 sorts after vmlinuz-6.1.0-9. */
const byVersion = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });

async function listOr(reader: FsReader, dir: string): Promise<FsEntry[]> {
  try {
    return await reader.list(dir);
  } catch {
    return [];
  }
}

/**
 * Find the kernel, initrd and device trees in a disk image: in the requested partition, or in the
 * first one that has a kernel. The caller copies them out with the returned reader and closes it.
 */
export async function findBootFiles(image: string, layout: DiskLayout, req: BootRequest = {}): Promise<FoundBootFiles> {
  const tried: string[] = [];
  for (const c of candidates(layout, req.partition)) {
    const reader = await openFs(image, c.offset, c.size === Infinity ? null : c.size, c.fs);
    try {
      const found = await findIn(reader, req);
      if (found) return { ...found, where: c.where, partition: c.partition, reader };
      tried.push(c.where);
    } catch (err) {
      await reader.close();
      throw err;
    }
    await reader.close();
  }
  const what = req.kernel ? `the kernel ${req.kernel}` : 'a kernel (vmlinuz*, zImage, Image, uImage in / or /boot)';
  throw new Error(tried.length ? `no ${what} in ${tried.join(', ')}` : `no partition with a file system we can read (ext2/3/4, FAT)`);
}

async function findIn(reader: FsReader, req: BootRequest): Promise<Omit<FoundBootFiles, 'where' | 'partition' | 'reader'> | null> {
  const dirs = ['/boot', '/'];
  const listing = new Map<string, FsEntry[]>();
  for (const d of dirs) listing.set(d, await listOr(reader, d));
  const exists = async (p: string) => {
    const dir = posix.dirname(p);
    if (!listing.has(dir)) listing.set(dir, await listOr(reader, dir));
    return listing.get(dir)!.some((e) => e.name === posix.basename(p) && e.kind === 'file');
  };

  let kernel: string | undefined;
  if (req.kernel) {
    if (!(await exists(checkImagePath(req.kernel)))) return null;
    kernel = req.kernel;
  } else {
    for (const d of dirs) {
      const names = listing.get(d)!.filter((e) => e.kind === 'file' && KERNEL_RE.test(e.name)).map((e) => e.name).sort(byVersion);
      if (names.length) {
        kernel = posix.join(d, names.at(-1)!);
        break;
      }
    }
  }
  if (!kernel) return null;
  const version = KERNEL_RE.exec(posix.basename(kernel))?.[2] ?? '';

  let initrd: string | undefined;
  if (req.initrd) {
    if (!(await exists(checkImagePath(req.initrd)))) throw new Error(`no initrd ${req.initrd} next to the kernel ${kernel}`);
    initrd = req.initrd;
  } else {
    const dir = posix.dirname(kernel);
    const names = listing.get(dir)!.filter((e) => e.kind === 'file' && INITRD_RE.test(e.name)).map((e) => e.name);
    // The initrd of this kernel's version first, then an unversioned one.
    const pick = names.find((n) => INITRD_RE.exec(n)?.[2] === version) ?? names.find((n) => !INITRD_RE.exec(n)?.[2]);
    if (pick) initrd = posix.join(dir, pick);
  }

  const dtbs: Record<string, string> = {};
  if (req.dtbs) {
    for (const [model, p] of Object.entries(req.dtbs)) {
      if (!(await exists(checkImagePath(p)))) throw new Error(`no device tree ${p} (for ${model})`);
      dtbs[model] = p;
    }
  } else {
    Object.assign(dtbs, await findDtbs(reader, version.replace(/^-/, '')));
  }
  return { kernel, initrd, dtbs };
}

/** Look for DEFAULT_DTBS under the usual places (Debian's /usr/lib/linux-image-*, /boot/dtbs/<ver>/...). */
async function findDtbs(reader: FsReader, kver: string): Promise<Record<string, string>> {
  const wanted = new Map(Object.entries(DEFAULT_DTBS).map(([model, file]) => [file, model]));
  const out: Record<string, string> = {};
  const roots = ['/boot/dtbs', '/boot/dtb', '/dtbs', '/dtb', '/boot', '/'];
  if (kver) roots.push(`/usr/lib/linux-image-${kver}`, `/boot/dtbs/${kver}`, `/boot/dtb-${kver}`);
  let budget = 40; // directory listings, so an odd image cannot make this crawl
  const walk = async (dir: string, depth: number) => {
    if (budget-- <= 0) return;
    for (const e of await listOr(reader, dir)) {
      const p = posix.join(dir, e.name);
      if (e.kind === 'file' && wanted.has(e.name) && !out[wanted.get(e.name)!]) out[wanted.get(e.name)!] = p;
      else if (e.kind === 'dir' && depth > 0 && /^(dtbs?|allwinner|sun7i|\d[\w.+-]*)$/.test(e.name)) await walk(p, depth - 1);
    }
  };
  for (const r of roots) {
    if (Object.keys(out).length === wanted.size) break;
    await walk(r, r === '/' || r === '/boot' ? 1 : 2);
  }
  return out;
}
