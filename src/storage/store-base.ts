import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { log } from '../log.js';
import { assertDiskId, isStoreImageOf, StorageError, type CloneOptions, type DiskInfo, type DiskStore, type DiskStoreKind, type ImageDisk, type QuarantinedDisk } from './disk-store.js';
import { checkImageDisk, growDisk, type DiskFormat } from './image-check.js';
import { isNoSpace } from './run.js';
import { HttpError } from '../util/errors.js';

const DISK_FILE = 'disk.img';
const DISK_META = 'disk.json';
const IMAGE_META = 'image.json';
const QUARANTINE = 'quarantine';
const QUARANTINE_NAME = /^[a-z0-9][a-z0-9_-]{0,63}@[0-9TZ-]{10,40}$/;

interface ImageMeta {
  image: string;
  key: string;
  sha256?: string;
  sizeBytes: number;
  format: DiskFormat;
  importedAt: string;
}
/** A clone's: its image and import; a blank disk's: neither. */
interface DiskMeta {
  image?: string;
  imageKey?: string;
  sizeBytes: number;
  createdAt: string;
}

const SECTOR = 512;

/**
 * The layout and the all-or-nothing logic every store shares; drivers supply how a directory is made,
 * filled, cloned and removed. Under `dir`:
 *   images/<image>@<version>/disk.img   the image's disk, imported (and checked) once per version
 *   disks/<diskId>/disk.img             a lease's disk, cloned from the import (or blank: createBlank)
 *   .../.tmp-*, .../.trash-*            work in progress; never listed, removed by sweep()
 * A clone is built in a `.tmp-` directory and renamed into place, so a crash leaves either a whole disk
 * or a leftover that sweep() removes — never a half-made disk under a real id.
 */
export abstract class StoreBase implements DiskStore {
  abstract readonly kind: DiskStoreKind;
  private readonly imports = new Map<string, Promise<string>>();
  /** Disks being made (cloned or blank), by id. */
  private readonly clones = new Map<string, Promise<DiskInfo>>();

  constructor(readonly dir: string) {}

  /** Make an empty directory that will hold one disk (btrfs: a subvolume): an import, or a blank disk. */
  protected abstract makeDir(path: string): Promise<void>;
  /** Copy the image's file into the store (CoW when the image lives on the same filesystem). */
  protected abstract importFile(src: string, dst: string): Promise<void>;
  /** Freeze an imported image directory (btrfs: read-only subvolume). */
  protected async sealImport(_dir: string): Promise<void> {}
  /** Make `dst` (not yet existing) a directory holding a clone of `base`/disk.img. */
  protected abstract cloneDir(base: string, dst: string, opts: CloneOptions & { totalBytes: number }): Promise<void>;
  /** Per-disk limits once the clone is complete (btrfs: a qgroup limit). */
  protected async limit(_dir: string, _sizeBytes: number): Promise<void> {}
  /** Remove a directory made by makeDir/cloneDir; `reclaim`: return when its space is free again. */
  protected abstract removeDir(path: string, reclaim?: boolean): Promise<void>;
  /** Bytes the disk itself holds. */
  protected abstract usedBytes(dir: string): Promise<number | undefined>;

  diskPath(diskId: string): string {
    assertDiskId(diskId);
    return join(this.dir, 'disks', diskId, DISK_FILE);
  }

  async clone(src: ImageDisk, diskId: string, opts: CloneOptions = {}): Promise<DiskInfo> {
    assertDiskId(diskId);
    // One clone per id at a time: a retried job must not race its own first attempt.
    const running = this.clones.get(diskId);
    if (running) return running;
    const p = this.cloneOnce(src, diskId, opts).finally(() => this.clones.delete(diskId));
    this.clones.set(diskId, p);
    return p;
  }

  private async cloneOnce(src: ImageDisk, diskId: string, opts: CloneOptions): Promise<DiskInfo> {
    const existing = await this.size(diskId);
    if (existing) return existing;
    const base = await this.importImage(src);
    const meta = JSON.parse(await readFile(join(base, IMAGE_META), 'utf8')) as ImageMeta;
    const sizeBytes = opts.sizeBytes ?? meta.sizeBytes;
    if (sizeBytes < meta.sizeBytes) {
      throw new StorageError('BAD_SIZE', `disk ${diskId}: ${sizeBytes} bytes is smaller than image ${src.image}'s ${meta.sizeBytes}`);
    }
    await mkdir(join(this.dir, 'disks'), { recursive: true });
    const tmp = join(this.dir, 'disks', `.tmp-${diskId}-${randomBytes(3).toString('hex')}`);
    const t0 = Date.now();
    try {
      await this.cloneDir(base, tmp, { ...opts, totalBytes: meta.sizeBytes });
      if (sizeBytes > meta.sizeBytes) await growDisk(join(tmp, DISK_FILE), sizeBytes, meta.format);
      const dm: DiskMeta = { image: src.image, imageKey: meta.key, sizeBytes, createdAt: new Date().toISOString() };
      await writeFile(join(tmp, DISK_META), JSON.stringify(dm) + '\n');
      await this.limit(tmp, sizeBytes);
      await rename(tmp, join(this.dir, 'disks', diskId));
    } catch (err) {
      await this.removeDir(tmp, true).catch((e) => log.warn({ err: e, tmp }, 'storage: could not remove a failed clone (sweep() will)'));
      if (err instanceof StorageError) throw err;
      if (isNoSpace(err)) throw new StorageError('ENOSPC', `storage ${this.dir} is full: cannot clone image ${src.image} as disk ${diskId}`, { cause: err });
      throw new Error(`storage: cloning image ${src.image} as disk ${diskId} failed: ${(err as Error).message}`, { cause: err });
    }
    opts.onProgress?.(meta.sizeBytes, meta.sizeBytes);
    log.info({ disk: diskId, image: src.image, store: this.kind, ms: Date.now() - t0, sizeBytes }, 'storage: disk cloned');
    return (await this.size(diskId))!;
  }

  async createBlank(diskId: string, sizeBytes: number): Promise<DiskInfo> {
    assertDiskId(diskId);
    const running = this.clones.get(diskId);
    if (running) return running;
    const p = this.createBlankOnce(diskId, sizeBytes).finally(() => this.clones.delete(diskId));
    this.clones.set(diskId, p);
    return p;
  }

  private async createBlankOnce(diskId: string, sizeBytes: number): Promise<DiskInfo> {
    const existing = await this.size(diskId);
    if (existing) return existing;
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % SECTOR) {
      throw new StorageError('BAD_SIZE', `disk ${diskId}: a blank disk needs a positive whole number of ${SECTOR}-byte sectors, not ${sizeBytes} bytes`);
    }
    await mkdir(join(this.dir, 'disks'), { recursive: true });
    const tmp = join(this.dir, 'disks', `.tmp-${diskId}-${randomBytes(3).toString('hex')}`);
    try {
      await this.makeDir(tmp);
      // A file of holes only: it reads as zeros and holds no blocks until the board writes.
      const fh = await open(join(tmp, DISK_FILE), 'wx');
      await fh.truncate(sizeBytes).finally(() => fh.close());
      const dm: DiskMeta = { sizeBytes, createdAt: new Date().toISOString() };
      await writeFile(join(tmp, DISK_META), JSON.stringify(dm) + '\n');
      await this.limit(tmp, sizeBytes);
      await rename(tmp, join(this.dir, 'disks', diskId));
    } catch (err) {
      await this.removeDir(tmp, true).catch((e) => log.warn({ err: e, tmp }, 'storage: could not remove a failed blank disk (sweep() will)'));
      if (isNoSpace(err)) throw new StorageError('ENOSPC', `storage ${this.dir} is full: cannot create blank disk ${diskId}`, { cause: err });
      throw new Error(`storage: creating blank disk ${diskId} failed: ${(err as Error).message}`, { cause: err });
    }
    log.info({ disk: diskId, store: this.kind, sizeBytes }, 'storage: blank disk created');
    return (await this.size(diskId))!;
  }

  /** The directory of the checked import of this image version, importing it first if needed. */
  private async importImage(src: ImageDisk): Promise<string> {
    const st = await stat(src.path).catch((err) => {
      throw new StorageError('CORRUPT_IMAGE', `image ${src.image}: root disk ${src.path} is missing`, { cause: err });
    });
    if (!st.isFile()) throw new StorageError('CORRUPT_IMAGE', `image ${src.image}: root disk ${src.path} is not a file`);
    // A new version of an image (other content) is a new import; disks of the old one keep theirs.
    const version = src.sha256 ? src.sha256.slice(0, 16) : `${st.size}-${Math.floor(st.mtimeMs)}`;
    const key = `${src.image}@${version}`;
    const dir = join(this.dir, 'images', key);
    if (await exists(join(dir, IMAGE_META))) return dir;
    const running = this.imports.get(key);
    if (running) return running;
    const p = this.importOnce(src, key, st.size, dir).finally(() => this.imports.delete(key));
    this.imports.set(key, p);
    return p;
  }

  private async importOnce(src: ImageDisk, key: string, sizeBytes: number, dir: string): Promise<string> {
    await mkdir(join(this.dir, 'images'), { recursive: true });
    const free = await this.freeBytes();
    const tmp = join(this.dir, 'images', `.tmp-${key}-${randomBytes(3).toString('hex')}`);
    const t0 = Date.now();
    try {
      await this.makeDir(tmp);
      await this.importFile(src.path, join(tmp, DISK_FILE));
      const format = await checkImageDisk(join(tmp, DISK_FILE), src);
      const meta: ImageMeta = { image: src.image, key, sha256: src.sha256, sizeBytes, format, importedAt: new Date().toISOString() };
      await writeFile(join(tmp, IMAGE_META), JSON.stringify(meta) + '\n');
      await this.sealImport(tmp);
      await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
        // Another process imported the same version meanwhile: use theirs.
        if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
        await this.removeDir(tmp);
      });
    } catch (err) {
      await this.removeDir(tmp, true).catch((e) => log.warn({ err: e, tmp }, 'storage: could not remove a failed import (sweep() will)'));
      if (err instanceof StorageError) throw err;
      if (isNoSpace(err)) {
        throw new StorageError('ENOSPC', `storage ${this.dir} is full: importing image ${src.image}'s ${sizeBytes}-byte root disk failed (${free} bytes were free)`, { cause: err });
      }
      throw new Error(`storage: importing image ${src.image} from ${src.path} failed: ${(err as Error).message}`, { cause: err });
    }
    log.info({ image: src.image, key, store: this.kind, ms: Date.now() - t0 }, 'storage: image root disk imported');
    return dir;
  }

  async destroy(diskId: string): Promise<boolean> {
    assertDiskId(diskId);
    await this.clones.get(diskId)?.catch(() => {});
    const dir = join(this.dir, 'disks', diskId);
    if (!(await exists(dir))) return false;
    // Rename first: the id is gone at once, and an interrupted removal is only a .trash- leftover.
    const trash = join(this.dir, 'disks', `.trash-${diskId}-${randomBytes(3).toString('hex')}`);
    await rename(dir, trash);
    await this.removeDir(trash);
    log.info({ disk: diskId, store: this.kind }, 'storage: disk destroyed');
    return true;
  }

  /**
   * Move a disk no lease owns out of the way instead of destroying it: `quarantine/<id>@<time>`, listed
   * for the admin and removed only by removeQuarantined() or sweepQuarantine() after a set age. A restored
   * state file or a second server's reconcile then costs nobody a disk.
   */
  async quarantine(diskId: string): Promise<string | null> {
    assertDiskId(diskId);
    await this.clones.get(diskId)?.catch(() => {});
    const dir = join(this.dir, 'disks', diskId);
    if (!(await exists(dir))) return null;
    await mkdir(join(this.dir, QUARANTINE), { recursive: true });
    const name = `${diskId}@${new Date().toISOString().replace(/[:.]/g, '-')}`;
    await rename(dir, join(this.dir, QUARANTINE, name));
    log.warn({ disk: diskId, store: this.kind, quarantined: name }, 'storage: disk quarantined');
    return name;
  }

  async listQuarantine(): Promise<QuarantinedDisk[]> {
    const names = (await readdir(join(this.dir, QUARANTINE)).catch(() => [] as string[])).filter((n) => QUARANTINE_NAME.test(n)).sort();
    const out: QuarantinedDisk[] = [];
    for (const name of names) {
      const dir = join(this.dir, QUARANTINE, name);
      const st = await stat(join(dir, DISK_FILE)).catch(() => null);
      const meta = (await readJson<DiskMeta>(join(dir, DISK_META))) ?? undefined;
      const since = (await stat(dir).catch(() => null))?.ctime.toISOString() ?? '';
      out.push({ name, diskId: name.slice(0, name.indexOf('@')), image: meta?.image, createdAt: meta?.createdAt, quarantinedAt: since, sizeBytes: st?.size ?? 0 });
    }
    return out;
  }

  async removeQuarantined(name: string): Promise<boolean> {
    if (!QUARANTINE_NAME.test(name)) throw new HttpError(400, `invalid quarantined disk name ${JSON.stringify(name)}`);
    const dir = join(this.dir, QUARANTINE, name);
    if (!(await exists(dir))) return false;
    const trash = join(this.dir, 'disks', `.trash-q-${randomBytes(3).toString('hex')}`);
    await mkdir(join(this.dir, 'disks'), { recursive: true });
    await rename(dir, trash);
    await this.removeDir(trash);
    log.info({ quarantined: name, store: this.kind }, 'storage: quarantined disk removed');
    return true;
  }

  async sweepQuarantine(maxAgeMs: number, now = Date.now()): Promise<string[]> {
    const gone: string[] = [];
    for (const q of await this.listQuarantine()) {
      if (q.quarantinedAt && now - Date.parse(q.quarantinedAt) > maxAgeMs && (await this.removeQuarantined(q.name))) gone.push(`removed quarantined disk ${q.name} (older than ${Math.round(maxAgeMs / 86_400_000)} days)`);
    }
    return gone;
  }

  async list(): Promise<DiskInfo[]> {
    const ids = (await readdir(join(this.dir, 'disks')).catch(() => [] as string[])).filter((n) => !n.startsWith('.')).sort();
    const out: DiskInfo[] = [];
    for (const id of ids) {
      const info = await this.size(id);
      if (info) out.push(info);
    }
    return out;
  }

  async size(diskId: string): Promise<DiskInfo | null> {
    const path = this.diskPath(diskId);
    const st = await stat(path).catch(() => null);
    if (!st) return null;
    const dir = join(this.dir, 'disks', diskId);
    const meta = (await readJson<DiskMeta>(join(dir, DISK_META))) ?? undefined;
    return { id: diskId, path, sizeBytes: st.size, usedBytes: await this.usedBytes(dir), image: meta?.image, createdAt: meta?.createdAt };
  }

  async importedImages(): Promise<string[]> {
    const keys = await readdir(join(this.dir, 'images')).catch(() => [] as string[]);
    return [...new Set(keys.filter((k) => !k.startsWith('.')).map((k) => k.slice(0, k.lastIndexOf('@'))))].sort();
  }

  async removeImage(image: string): Promise<void> {
    const users = (await this.list()).filter((d) => isStoreImageOf(d.image, image)).map((d) => d.id);
    if (users.length) throw new StorageError('IMAGE_IN_USE', `image ${image} is in use by disk${users.length > 1 ? 's' : ''} ${users.join(', ')}`, { details: { disks: users } });
    const keys = await readdir(join(this.dir, 'images')).catch(() => [] as string[]);
    for (const k of keys.filter((k) => k.includes('@') && isStoreImageOf(k.slice(0, k.lastIndexOf('@')), image))) await this.removeDir(join(this.dir, 'images', k));
  }

  async sweep(): Promise<string[]> {
    const done: string[] = [];
    const used = new Set<string>();
    const disks = join(this.dir, 'disks');
    for (const n of await readdir(disks).catch(() => [] as string[])) {
      if (n.startsWith('.tmp-') || n.startsWith('.trash-')) {
        await this.removeDir(join(disks, n));
        done.push(`removed leftover ${join('disks', n)}`);
      } else {
        const m = await readJson<DiskMeta>(join(disks, n, DISK_META));
        if (m?.imageKey) used.add(m.imageKey); // a blank disk uses no import
      }
    }
    for (const n of await readdir(join(this.dir, QUARANTINE)).catch(() => [] as string[])) {
      const m = await readJson<DiskMeta>(join(this.dir, QUARANTINE, n, DISK_META));
      if (m?.imageKey) used.add(m.imageKey);
    }
    const images = join(this.dir, 'images');
    const keys = await readdir(images).catch(() => [] as string[]);
    // Keep the newest import of each image (the next lease needs it); drop older ones no disk uses.
    const newest = new Map<string, { key: string; at: string }>();
    for (const k of keys.filter((k) => !k.startsWith('.'))) {
      const m = await readJson<ImageMeta>(join(images, k, IMAGE_META));
      const cur = newest.get(m?.image ?? k);
      if (m && (!cur || m.importedAt > cur.at)) newest.set(m.image, { key: k, at: m.importedAt });
    }
    for (const k of keys) {
      const leftover = k.startsWith('.tmp-') || k.startsWith('.trash-');
      const stale = !k.startsWith('.') && !used.has(k) && ![...newest.values()].some((n) => n.key === k);
      if (leftover || stale) {
        await this.removeDir(join(images, k));
        done.push(leftover ? `removed leftover ${join('images', k)}` : `removed unused old import ${join('images', k)}`);
      }
    }
    return done;
  }

  protected async freeBytes(): Promise<number> {
    const s = await statfs(this.dir);
    return s.bavail * s.bsize;
  }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function readJson<T>(p: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(p, 'utf8')) as T;
  } catch {
    return null;
  }
}

/** `rm -rf` that tolerates absence. */
export async function removeTree(p: string): Promise<void> {
  await rm(p, { recursive: true, force: true });
}
