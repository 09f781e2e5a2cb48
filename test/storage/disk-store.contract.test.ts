/**
 * One contract for every DiskStore driver, run against the real thing: btrfs (snapshots + qgroups) on
 * a loop btrfs, reflink on a loop XFS, copy on a loop ext4. Each gets a small filesystem of its own,
 * so "storage full" can be tested by filling it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StorageError, type DiskStore, type DiskStoreKind, type ImageDisk } from '../../src/storage/disk-store.js';
import { DISK_STORES, openDiskStore } from '../../src/storage/open-store.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { makeRootImage, readFromImage, writeToImage, type RootImage } from './image-fixture.js';
import { makeLoopFs, type LoopFs, type LoopFsKind } from './loop-fs.js';

const DRIVERS: Array<{ kind: DiskStoreKind; fs: LoopFsKind }> = [
  { kind: 'btrfs', fs: 'btrfs' },
  { kind: 'reflink', fs: 'xfs' },
  { kind: 'copy', fs: 'ext4' },
];

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

async function expectStorageError(p: Promise<unknown>, code: StorageError['code'], message: RegExp): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, 'expected a StorageError').toBeInstanceOf(StorageError);
  expect((err as StorageError).code, (err as Error).message).toBe(code);
  expect((err as Error).message).toMatch(message);
}

/** Everything under the store root except finished disks and imports: must stay empty after failures. */
function leftovers(store: DiskStore): string[] {
  return ['disks', 'images'].flatMap((d) => {
    try {
      return readdirSync(join(store.dir, d)).filter((n) => n.startsWith('.'));
    } catch {
      return [];
    }
  });
}

describe.each(DRIVERS)('DiskStore contract: $kind', ({ kind, fs }) => {
  let loop: LoopFs;
  let store: DiskStore;
  let img: RootImage;
  let src: ImageDisk;
  let work: string;

  beforeAll(async () => {
    requireRoot();
    requireTools('losetup', 'mkfs.btrfs', 'mkfs.xfs', 'mkfs.ext4', 'btrfs', 'debugfs', 'e2fsck', 'resize2fs', 'truncate');
    loop = makeLoopFs(fs, 320);
    work = join(loop.dir, 'work');
    mkdirSync(work);
    const opened = await openDiskStore(join(loop.dir, 'store'));
    expect(opened.store.kind, opened.reason).toBe(kind);
    store = opened.store;
    img = makeRootImage(join(work, 'root.img'), { sizeMiB: 32, dataMiB: 4 });
    src = { image: 'tiny', path: img.path, sha256: img.sha256, arch: 'armv7' };
  });
  afterAll(() => loop?.cleanup());

  it('auto-detection picks this driver and a named driver is checked', async () => {
    expect(store.kind).toBe(kind);
    await expect(openDiskStore(join(loop.dir, 'store'), 'nope' as DiskStoreKind)).rejects.toThrow(/unknown disk store driver "nope" \(valid: auto, btrfs, reflink, copy\)/);
    if (kind !== 'btrfs') await expect(openDiskStore(join(loop.dir, 'store'), 'btrfs')).rejects.toThrow(/not on btrfs/);
  });

  it('clones the image: same bytes, listed with its image and size, progress reported', async () => {
    const progress: number[] = [];
    const d = await store.clone(src, 'l-one', { onProgress: (done, total) => progress.push(done / total) });
    expect(d).toMatchObject({ id: 'l-one', path: store.diskPath('l-one'), sizeBytes: img.sizeBytes, image: 'tiny' });
    expect(sha(d.path)).toBe(img.sha256);
    expect(progress.at(-1)).toBe(1);
    expect((await store.list()).map((x) => x.id)).toEqual(['l-one']);
    expect(await store.importedImages()).toEqual(['tiny']);
    expect(leftovers(store)).toEqual([]);
  });

  it('clones are independent: a write to one changes neither the image nor another clone', async () => {
    const a = await store.clone(src, 'l-a');
    const b = await store.clone(src, 'l-b');
    writeToImage(a.path, '/etc/tenant', 'written by lease a');
    expect(readFromImage(a.path, '/etc/tenant')).toBe('written by lease a');
    expect(readFromImage(b.path, '/etc/tenant')).toBeNull();
    expect(sha(img.path)).toBe(img.sha256);
    expect(sha(b.path)).toBe(img.sha256);
  });

  it('clone of an existing id is idempotent: the disk (and what was written to it) stays', async () => {
    const again = await store.clone(src, 'l-a');
    expect(again.path).toBe(store.diskPath('l-a'));
    expect(readFromImage(again.path, '/etc/tenant')).toBe('written by lease a');
  });

  it('destroy removes the disk; a second destroy is a no-op', async () => {
    expect(await store.destroy('l-a')).toBe(true);
    expect(await store.destroy('l-a')).toBe(false);
    expect(await store.size('l-a')).toBeNull();
    expect((await store.list()).map((x) => x.id).sort()).toEqual(['l-b', 'l-one']);
    expect(leftovers(store)).toEqual([]);
  });

  it('a disk larger than its image: file and ext4 filesystem are grown at clone time', async () => {
    const d = await store.clone(src, 'l-big', { sizeBytes: 96 * 1024 * 1024 });
    expect(statSync(d.path).size).toBe(96 * 1024 * 1024);
    const info = execFileSync('dumpe2fs', ['-h', d.path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const blocks = Number(/Block count:\s+(\d+)/.exec(info)![1]);
    const bsize = Number(/Block size:\s+(\d+)/.exec(info)![1]);
    expect(blocks * bsize).toBe(96 * 1024 * 1024);
    execFileSync('e2fsck', ['-fn', d.path], { stdio: 'ignore' }); // throws unless clean
    expect(readFromImage(d.path, '/etc/hello')).toBe('hello from the image\n');
    await store.destroy('l-big');
  });

  it('refuses a disk smaller than its image, leaving nothing', async () => {
    await expectStorageError(store.clone(src, 'l-small', { sizeBytes: 1024 * 1024 }), 'BAD_SIZE', /smaller than image tiny/);
    expect(await store.size('l-small')).toBeNull();
    expect(leftovers(store)).toEqual([]);
  });

  it('rejects bad images with clear errors and leaves nothing half-made', async () => {
    const before = (await store.list()).map((d) => d.id);
    // Checksum mismatch (the file changed after the manifest was written).
    await expectStorageError(store.clone({ ...src, image: 'sums', sha256: '0'.repeat(64) }, 'l-bad1'), 'CORRUPT_IMAGE', /image sums: root disk .* is corrupt \(sha256/);
    // Not a disk at all.
    const junk = join(work, 'junk.img');
    writeFileSync(junk, Buffer.alloc(1024 * 1024, 0x41));
    await expectStorageError(store.clone({ image: 'junk', path: junk }, 'l-bad2'), 'CORRUPT_IMAGE', /neither an ext2\/3\/4 filesystem nor a partitioned/);
    // An ext4 whose root directory inode was cleared: magic intact, e2fsck finds errors.
    const broken = makeRootImage(join(work, 'broken.img'), { sizeMiB: 16 });
    execFileSync('debugfs', ['-w', '-R', 'clri <2>', broken.path], { stdio: 'ignore' });
    await expectStorageError(store.clone({ image: 'broken', path: broken.path }, 'l-bad3'), 'CORRUPT_IMAGE', /root filesystem in .* has errors \(e2fsck exit (4|12)/);
    // An image that says armv7 but holds AArch64 binaries.
    const arm64 = makeRootImage(join(work, 'arm64.img'), { sizeMiB: 16, arch: 'arm64' });
    await expectStorageError(store.clone({ image: 'arm64', path: arm64.path, arch: 'armv7' }, 'l-bad4'), 'WRONG_ARCH', /holds AArch64 64-bit binaries \(\/bin\/busybox\) but the manifest says armv7/);
    // Missing file.
    await expectStorageError(store.clone({ image: 'gone', path: join(work, 'nope.img') }, 'l-bad5'), 'CORRUPT_IMAGE', /root disk .* is missing/);
    expect((await store.list()).map((d) => d.id)).toEqual(before);
    expect(await store.importedImages()).toEqual(['tiny']);
    expect(leftovers(store)).toEqual([]);
  });

  it('a full filesystem gives ENOSPC, and the failed clone is rolled back', async () => {
    // A new image with more data than the store has room for: the import runs out of space.
    const free = () => {
      const s = execFileSync('df', ['-B1', '--output=avail', loop.dir], { encoding: 'utf8' });
      return Number(s.trim().split('\n')[1]);
    };
    const bigMiB = Math.ceil(free() / 1024 / 1024) + 40;
    const big = makeRootImage(join('/var/tmp', `dozen-big-${process.pid}-${kind}.img`), { sizeMiB: Math.ceil(bigMiB * 1.1) + 16, dataMiB: bigMiB });
    try {
      await expectStorageError(store.clone({ image: 'big', path: big.path, sha256: big.sha256 }, 'l-full'), 'ENOSPC', /storage .* is full/);
    } finally {
      execFileSync('rm', ['-f', big.path]);
    }
    expect(await store.size('l-full')).toBeNull();
    expect(await store.importedImages()).toEqual(['tiny']);
    expect(leftovers(store)).toEqual([]);
    if (kind === 'copy') {
      // The copy store also needs room per clone: fill the filesystem, then clone the imported image.
      // Fill it completely (as root, ext4's reserved blocks too), then give back 2 MiB: less than a copy needs.
      const filler = join(work, 'filler');
      spawnSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=1M'], { stdio: 'ignore' });
      execFileSync('truncate', ['-s', '-2M', filler]);
      try {
        await expectStorageError(store.clone(src, 'l-full2'), 'ENOSPC', /storage .* is full: cannot clone image tiny as disk l-full2/);
      } finally {
        execFileSync('rm', ['-f', filler]);
      }
      expect(await store.size('l-full2')).toBeNull();
      expect(leftovers(store)).toEqual([]);
    }
  }, 120_000);

  it('an image with disks cannot be removed; once they are gone it can', async () => {
    await expectStorageError(store.removeImage('tiny'), 'IMAGE_IN_USE', /image tiny is in use by disks l-b, l-one/);
    for (const d of await store.list()) await store.destroy(d.id);
    await store.removeImage('tiny');
    expect(await store.importedImages()).toEqual([]);
  });

  it('sweep removes leftovers of interrupted clones and destroys', async () => {
    await store.clone(src, 'l-keep');
    mkdirSync(join(store.dir, 'disks', '.tmp-l-crashed-abc123'));
    writeFileSync(join(store.dir, 'disks', '.tmp-l-crashed-abc123', 'disk.img'), 'half');
    mkdirSync(join(store.dir, 'disks', '.trash-l-old-abc123'));
    const swept = await store.sweep();
    expect(swept).toEqual(expect.arrayContaining(['removed leftover disks/.tmp-l-crashed-abc123', 'removed leftover disks/.trash-l-old-abc123']));
    expect(leftovers(store)).toEqual([]);
    expect((await store.list()).map((d) => d.id)).toEqual(['l-keep']);
    expect(sha(store.diskPath('l-keep'))).toBe(img.sha256);
  });

  it('quarantine moves a disk aside with its bytes; only an explicit removal or the age limit deletes it', async () => {
    const d = await store.clone(src, 'l-orphan');
    writeToImage(d.path, '/etc/tenant', 'still mine');
    const name = await store.quarantine('l-orphan');
    expect(name).toMatch(/^l-orphan@[0-9TZ-]+$/);
    expect(await store.quarantine('l-orphan')).toBeNull();
    expect(await store.size('l-orphan')).toBeNull();
    expect((await store.list()).map((x) => x.id)).not.toContain('l-orphan');
    const aside = await store.listQuarantine();
    expect(aside).toEqual([expect.objectContaining({ name, diskId: 'l-orphan', image: 'tiny', sizeBytes: img.sizeBytes })]);
    expect(readFromImage(join(store.dir, 'quarantine', name!, 'disk.img'), '/etc/tenant')).toBe('still mine');
    // a sweep of leftovers and unused imports leaves it, and what it was cloned from, alone
    await store.sweep();
    expect((await store.listQuarantine()).map((q) => q.name)).toEqual([name]);
    // younger than the limit: kept; older: removed
    expect(await store.sweepQuarantine(86_400_000)).toEqual([]);
    expect(await store.sweepQuarantine(86_400_000, Date.now() + 2 * 86_400_000)).toEqual([expect.stringMatching(new RegExp(`^removed quarantined disk ${name}`))]);
    expect(await store.listQuarantine()).toEqual([]);
    await store.clone(src, 'l-orphan2');
    const n2 = (await store.quarantine('l-orphan2'))!;
    await expect(store.removeQuarantined('../../etc')).rejects.toThrow(/invalid quarantined disk name/);
    expect(await store.removeQuarantined(n2)).toBe(true);
    expect(await store.removeQuarantined(n2)).toBe(false);
    expect(leftovers(store)).toEqual([]);
  });

  it('parallel clones of a new image import it once and all succeed', async () => {
    const other = makeRootImage(join(work, 'other.img'), { sizeMiB: 24, hello: 'other\n' });
    const ids = ['l-p1', 'l-p2', 'l-p3'];
    const disks = await Promise.all(ids.map((id) => store.clone({ image: 'other', path: other.path, sha256: other.sha256 }, id)));
    for (const d of disks) expect(sha(d.path)).toBe(other.sha256);
    expect(readdirSync(join(store.dir, 'images')).filter((n) => n.startsWith('other@'))).toHaveLength(1);
    for (const id of ids) await store.destroy(id);
  });

  // btrfs only: registered for the btrfs run alone (a skipped test would read as a pass elsewhere)
  if (kind === 'btrfs') it('btrfs: every disk is its own subvolume with a qgroup limit', async () => {
    const d = await store.clone(src, 'l-quota', { sizeBytes: 64 * 1024 * 1024 });
    expect(statSync(join(store.dir, 'disks', 'l-quota')).ino).toBe(256);
    const q = execFileSync('btrfs', ['qgroup', 'show', '-re', '--raw', '-f', join(store.dir, 'disks', 'l-quota')], { encoding: 'utf8' });
    const row = q.split('\n').find((l) => /^0\/\d+/.test(l))!.trim().split(/\s+/);
    expect(Number(row[3])).toBe(Math.ceil(64 * 1024 * 1024 * 1.25) + 64 * 1024 * 1024); // max_rfer
    expect(d.usedBytes).toBeTypeOf('number');
    await store.destroy('l-quota');
  });

  it('createBlank: a sparse, zero-filled disk of that size, listed without an image; idempotent; destroyed like any disk', async () => {
    const size = 64 * 1024 * 1024;
    const d = await store.createBlank('l-blank-data', size);
    expect(d).toMatchObject({ id: 'l-blank-data', path: store.diskPath('l-blank-data'), sizeBytes: size });
    expect(d.image).toBeUndefined();
    const st = statSync(d.path);
    expect(st.size).toBe(size);
    expect(st.blocks * 512, 'a blank disk allocates nothing').toBeLessThanOrEqual(64 * 1024);
    expect(readFileSync(d.path).equals(Buffer.alloc(size))).toBe(true);
    if (kind === 'btrfs') expect(statSync(join(store.dir, 'disks', 'l-blank-data')).ino).toBe(256); // its own subvolume, like a clone
    const listed = (await store.list()).find((x) => x.id === 'l-blank-data');
    expect(listed).toMatchObject({ id: 'l-blank-data', sizeBytes: size });
    expect(listed!.image).toBeUndefined();
    expect(await store.size('l-blank-data')).toEqual(listed);
    // Idempotent: the existing disk, with what was written to it, whatever size is asked for now.
    const fd = openSync(d.path, 'r+');
    writeSync(fd, Buffer.from('docker was here'), 0, 15, 4096);
    closeSync(fd);
    expect(await store.createBlank('l-blank-data', 2 * size)).toMatchObject({ path: d.path, sizeBytes: size });
    const back = Buffer.alloc(15);
    const rd = openSync(d.path, 'r');
    readSync(rd, back, 0, 15, 4096);
    closeSync(rd);
    expect(back.toString()).toBe('docker was here');
    // Two at once make one disk.
    const [p1, p2] = await Promise.all([store.createBlank('l-blank2-data', size), store.createBlank('l-blank2-data', size)]);
    expect(p1).toEqual(p2);
    expect(leftovers(store)).toEqual([]);
    // Not a whole number of sectors: refused, nothing made.
    await expectStorageError(store.createBlank('l-odd-data', 1000), 'BAD_SIZE', /disk l-odd-data: a blank disk needs a positive whole number of 512-byte sectors, not 1000 bytes/);
    await expectStorageError(store.createBlank('l-odd-data', 0), 'BAD_SIZE', /not 0 bytes/);
    expect(await store.size('l-odd-data')).toBeNull();
    expect(leftovers(store)).toEqual([]);
    // sweep() and removeImage() see a disk of no image: it neither holds an import nor blocks a removal.
    await store.sweep();
    expect((await store.list()).map((x) => x.id)).toEqual(['l-blank-data', 'l-blank2-data', 'l-keep']);
    expect(await store.importedImages()).toEqual(['other', 'tiny']);
    await expectStorageError(store.removeImage('tiny'), 'IMAGE_IN_USE', /image tiny is in use by disk l-keep$/);
    await store.removeImage('other');
    expect(await store.importedImages()).toEqual(['tiny']);
    // Quarantined and destroyed like any disk.
    const q = (await store.quarantine('l-blank2-data'))!;
    expect(await store.listQuarantine()).toEqual([expect.objectContaining({ name: q, diskId: 'l-blank2-data', image: undefined, sizeBytes: size })]);
    await store.sweep();
    expect(await store.removeQuarantined(q)).toBe(true);
    expect(await store.destroy('l-blank-data')).toBe(true);
    expect(await store.destroy('l-blank-data')).toBe(false);
    expect(await store.size('l-blank-data')).toBeNull();
    expect((await store.list()).map((x) => x.id)).toEqual(['l-keep']);
    expect(leftovers(store)).toEqual([]);
  });

  it('the store type is independent of the drivers registry (every driver is listed)', () => {
    expect(Object.keys(DISK_STORES).sort()).toEqual(['btrfs', 'copy', 'reflink']);
  });
});
