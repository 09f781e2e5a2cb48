/**
 * IscsiBoardStorage (the BoardStorage of src/leases/ports.ts) on a real btrfs loop filesystem and a
 * real tgtd on a loopback portal: attach/detach idempotency, reimage, bad input with rollback, image
 * in use, reconcile, and targets coming back after tgtd is killed; a lease's blank data disk as LUN 2.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Image } from '../../src/images/catalog.js';
import { manifestSchema } from '../../src/images/catalog.js';
import { StorageError, type DiskStore } from '../../src/storage/disk-store.js';
import { IscsiBoardStorage } from '../../src/storage/iscsi-storage.js';
import { openDiskStore } from '../../src/storage/open-store.js';
import type { TgtDaemon } from '../../src/storage/tgt-daemon.js';
import type { TargetExporter, TgtExporter } from '../../src/storage/tgt-exporter.js';
import type { Board, Lease } from '../../src/store/schema.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { makeRootImage, readFromImage, writeToImage } from './image-fixture.js';
import { makeLoopFs, type LoopFs } from './loop-fs.js';
import { AUTH_FAILURE, iscsiInq, restarted, startTestTgt, TARGET_NOT_FOUND } from './tgt-fixture.js';

let loop: LoopFs;
let store: DiskStore;
let daemon: TgtDaemon;
let exporter: TgtExporter;
let portal: string;
let storage: IscsiBoardStorage;
/** What the lease store would hold: the storage reads it after a tgtd restart. */
let leases: Lease[] = [];
let image: Image;

function makeImage(name: string, opts: { arch?: 'armv7' | 'arm64'; contentArch?: 'armv7' | 'arm64'; rootDisk?: string | null; badSum?: boolean; cmdline?: string } = {}): Image {
  const dir = join(loop.dir, 'images', name);
  mkdirSync(dir, { recursive: true });
  const root = makeRootImage(join(dir, 'root.img'), { sizeMiB: 32, arch: opts.contentArch ?? opts.arch ?? 'armv7' });
  const manifest = manifestSchema.parse({
    name,
    arch: opts.arch ?? 'armv7',
    kernel: 'vmlinuz',
    cmdline: opts.cmdline ?? 'console={{console}} dozen.net=dhcp',
    rootDisk: opts.rootDisk === undefined ? 'root.img' : opts.rootDisk,
    sha256: { 'root.img': opts.badSum ? 'f'.repeat(64) : root.sha256 },
  });
  return { name, dir, manifest };
}

function board(id: string, arch: 'armv7' | 'arm64' = 'armv7'): Board {
  return { id, mac: '02:00:00:00:00:01', model: 'qemu-virt', arch, ip: '10.1.2.3', power: { driver: 'manual' }, image: 'test', state: 'provisioning', createdAt: new Date().toISOString() };
}

function lease(id: string, boardId: string): Lease {
  const l: Lease = { id, tenantId: 't1', kind: 'board', boardId, image: image.name, sshKeys: [], hostname: id, state: 'provisioning', createdAt: new Date().toISOString() };
  leases.push(l);
  return l;
}

/** Attach and record the result on the lease, as the lease service does. */
async function attach(l: Lease, b: Board, img = image) {
  l.iscsi = await storage.attach(l, b, img);
  return l.iscsi;
}

const chapOf = (l: Lease) => ({ user: l.iscsi!.chapUser, secret: l.iscsi!.chapSecret });

/** The size of a LUN of the lease's target as its board's initiator sees it after a login (libiscsi's iscsi-readcapacity16), or the tool's complaint. */
function lunBytes(l: Lease, lun: number): number | string {
  const r = l.iscsi!;
  const out = spawnSync('iscsi-readcapacity16', ['-i', r.initiator, `iscsi://${r.chapUser}%${r.chapSecret}@${portal}/${r.iqn}/${lun}`], { encoding: 'utf8', timeout: 30_000 });
  const size = /^Total size:(\d+)$/m.exec(out.stdout);
  return out.status === 0 && size ? Number(size[1]) : `exit ${out.status}: ${out.stdout}${out.stderr}`;
}

/** Bytes at `offset` of a disk file (a board's writes, as the file holds them). */
function readAt(path: string, offset: number, length: number): string {
  const fd = openSync(path, 'r');
  const b = Buffer.alloc(length);
  readSync(fd, b, 0, length, offset);
  closeSync(fd);
  return b.toString();
}

function writeAt(path: string, offset: number, text: string): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.from(text), 0, text.length, offset);
  closeSync(fd);
}

/** What reconcile re-makes a vanished data disk at (the storage below is configured so). */
const REMADE_DATA_BYTES = 48 * 1024 * 1024;

beforeAll(async () => {
  requireRoot();
  requireTools('tgtd', 'tgtadm', 'iscsi-inq', 'iscsi-readcapacity16', 'losetup', 'mkfs.btrfs', 'btrfs', 'debugfs', 'e2fsck');
  loop = makeLoopFs('btrfs', 400);
  ({ store } = await openDiskStore(join(loop.dir, 'storage')));
  ({ daemon, exporter, portal } = await startTestTgt());
  storage = new IscsiBoardStorage({ store, exporter, daemon, recorded: () => leases, dataDiskBytes: REMADE_DATA_BYTES });
  image = makeImage('test');
});
afterAll(async () => {
  await daemon?.stop();
  loop?.cleanup();
});

describe('attach / detach', () => {
  it('attach clones the image and exports it to the board alone; kernelArgs tell the initramfs how to log in', async () => {
    const l = lease('l-one', 'bpi-1');
    const rec = await attach(l, board('bpi-1'));
    expect(rec).toMatchObject({
      disk: store.diskPath('l-one'),
      iqn: 'iqn.2026-11.cloud.dozen:bpi-1.l-one',
      initiator: 'iqn.2026-11.cloud.dozen:bpi-1',
      chapUser: 'l-one',
      targetUser: 'l-one-target',
      portal,
    });
    expect(rec.chapSecret).toMatch(/^[A-Za-z0-9]{24}$/);
    expect(rec.targetSecret).toMatch(/^[A-Za-z0-9]{24}$/);
    expect(rec.targetSecret).not.toBe(rec.chapSecret);
    expect(iscsiInq(portal, rec.iqn, rec.initiator, chapOf(l)).ok).toBe(true);
    // Mutual CHAP: the initiator that checks the target's secret logs in; told another secret, it refuses the target.
    const tgtAccount = { user: rec.targetUser!, secret: rec.targetSecret! };
    expect(iscsiInq(portal, rec.iqn, rec.initiator, chapOf(l), tgtAccount)).toMatchObject({ ok: true, out: expect.stringContaining('DIRECT_ACCESS') });
    expect(iscsiInq(portal, rec.iqn, rec.initiator, chapOf(l), { ...tgtAccount, secret: 'NotTheTargets0123456789x' }).ok).toBe(false);
    // Another board's initiator name with the right secret: refused at login ("target not found").
    expect(iscsiInq(portal, rec.iqn, 'iqn.2026-11.cloud.dozen:bpi-2', chapOf(l))).toEqual({ ok: false, code: 10, out: `${TARGET_NOT_FOUND}\n` });
    const [ip, port] = portal.split(':');
    expect(storage.kernelArgs(rec, image)).toBe(
      `iscsi_initiator=iqn.2026-11.cloud.dozen:bpi-1 iscsi_target_name=iqn.2026-11.cloud.dozen:bpi-1.l-one iscsi_target_ip=${ip} ` +
        `iscsi_target_port=${port} iscsi_target_group=1 iscsi_username=l-one iscsi_password=${rec.chapSecret} ` +
        `iscsi_in_username=l-one-target iscsi_in_password=${rec.targetSecret} root=/dev/sda rw`,
    );
    // An image that names its root device itself keeps it.
    expect(storage.kernelArgs(rec, { ...image, manifest: { ...image.manifest, cmdline: 'console=x root=UUID=abc ro' } })).not.toContain('root=/dev/sda');
  });

  it('attach again (a retried job) returns the same record and keeps the disk and what was written', async () => {
    const l = leases.find((x) => x.id === 'l-one')!;
    const first = l.iscsi!;
    writeToImage(first.disk, '/etc/mark', 'kept');
    const again = await attach(l, board('bpi-1'));
    expect(again).toEqual(first);
    expect(readFromImage(again.disk, '/etc/mark')).toBe('kept');
    expect((await exporter.list()).filter((t) => t.iqn === first.iqn)).toHaveLength(1);
  });

  it('two leases on two boards get separate disks, targets, ids and secrets', async () => {
    const l2 = lease('l-two', 'bpi-2');
    const r2 = await attach(l2, board('bpi-2'));
    const r1 = leases.find((x) => x.id === 'l-one')!.iscsi!;
    expect(r2.tid).not.toBe(r1.tid);
    expect(r2.chapSecret).not.toBe(r1.chapSecret);
    expect(readFromImage(r2.disk, '/etc/mark')).toBeNull();
    expect(iscsiInq(portal, r2.iqn, r1.initiator, chapOf(leases[0]!))).toEqual({ ok: false, code: 10, out: `${TARGET_NOT_FOUND}\n` });
    expect(iscsiInq(portal, r2.iqn, r2.initiator, chapOf(l2)).ok).toBe(true);
  });

  it('reimage (detach + attach) gives a fresh clone and a new secret; the old secret no longer works', async () => {
    const l = leases.find((x) => x.id === 'l-one')!;
    const old = l.iscsi!;
    await storage.detach(l);
    const rec = await attach(l, board('bpi-1'));
    expect(readFromImage(rec.disk, '/etc/mark')).toBeNull();
    expect(rec.chapSecret).not.toBe(old.chapSecret);
    expect(iscsiInq(portal, rec.iqn, rec.initiator, { user: old.chapUser, secret: old.chapSecret })).toEqual({ ok: false, code: 10, out: `${AUTH_FAILURE}\n` });
    expect(iscsiInq(portal, rec.iqn, rec.initiator, chapOf(l)).ok).toBe(true);
  });

  it('every boot gets a new CHAP secret: the last boot’s stops working, the disk and its data stay', async () => {
    const l = leases.find((x) => x.id === 'l-one')!;
    const old = l.iscsi!;
    writeToImage(old.disk, '/etc/boot-mark', 'kept across boots');
    const rec = await storage.newBootSecret(l);
    l.iscsi = rec;
    expect({ ...rec, chapSecret: 'x', targetSecret: 'x' }).toEqual({ ...old, chapSecret: 'x', targetSecret: 'x' }); // same target, disk, tid, users
    expect(rec.chapSecret).toMatch(/^[A-Za-z0-9]{24}$/);
    expect(rec.chapSecret).not.toBe(old.chapSecret);
    expect(rec.targetSecret).not.toBe(old.targetSecret);
    // The target answers with the new boot's secret only.
    expect(iscsiInq(portal, rec.iqn, rec.initiator, chapOf(l), { user: rec.targetUser!, secret: old.targetSecret! }).ok).toBe(false);
    expect(iscsiInq(portal, rec.iqn, rec.initiator, chapOf(l), { user: rec.targetUser!, secret: rec.targetSecret! }).ok).toBe(true);
    expect(iscsiInq(portal, rec.iqn, rec.initiator, { user: old.chapUser, secret: old.chapSecret })).toEqual({ ok: false, code: 10, out: `${AUTH_FAILURE}\n` });
    expect(iscsiInq(portal, rec.iqn, rec.initiator, chapOf(l)).ok).toBe(true);
    expect(readFromImage(rec.disk, '/etc/boot-mark')).toBe('kept across boots');
  });

  it('detach removes target, CHAP account and disk; it is idempotent, also without a record', async () => {
    const l = leases.find((x) => x.id === 'l-two')!;
    const rec = l.iscsi!;
    await storage.detach({ ...l, iscsi: undefined }); // a crash before the record was stored
    expect((await exporter.list()).map((t) => t.iqn)).not.toContain(rec.iqn);
    expect(await daemon.adm.accounts()).not.toContain(rec.chapUser);
    expect(await store.size('l-two')).toBeNull();
    await storage.detach(l);
    l.state = 'released';
    delete l.iscsi;
  });
});

describe('bad input', () => {
  const expectCode = async (p: Promise<unknown>, code: StorageError['code'], msg: RegExp) => {
    const err = await p.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).code).toBe(code);
    expect((err as Error).message).toMatch(msg);
  };
  const nothingFor = async (id: string) => {
    expect(await store.size(id)).toBeNull();
    expect((await exporter.list()).some((t) => t.iqn.endsWith(`.${id}`))).toBe(false);
  };

  it('wrong arch: an arm64 board, or an image whose binaries are not its manifest’s arch', async () => {
    await expectCode(storage.attach(lease('l-arch1', 'rk-1'), board('rk-1', 'arm64'), image), 'WRONG_ARCH', /board rk-1 is arm64 but image test has no arm64 build/);
    await nothingFor('l-arch1');
    const liar = makeImage('liar', { arch: 'armv7', contentArch: 'arm64' });
    await expectCode(storage.attach(lease('l-arch2', 'bpi-3'), board('bpi-3'), liar), 'WRONG_ARCH', /image liar: its root disk holds AArch64/);
    await nothingFor('l-arch2');
  });

  it('a corrupt image (checksum mismatch) and an image without a root disk', async () => {
    await expectCode(storage.attach(lease('l-bad', 'bpi-3'), board('bpi-3'), makeImage('rotten', { badSum: true })), 'CORRUPT_IMAGE', /image rotten: root disk .* is corrupt/);
    await nothingFor('l-bad');
    await expectCode(storage.attach(lease('l-nodisk', 'bpi-3'), board('bpi-3'), makeImage('ramdisk-only', { rootDisk: null })), 'NO_ROOT_DISK', /image ramdisk-only has no armv7 root disk/);
    expect(new StorageError('CORRUPT_IMAGE', 'x').status).toBe(422);
  });

  it('a failed export rolls the fresh clone back', async () => {
    const failing: TargetExporter = {
      portal: exporter.portal,
      ensure: async () => {
        throw new StorageError('EXPORT_FAILED', 'tgtd refused target (simulated)');
      },
      remove: (iqn, user) => exporter.remove(iqn, user),
      list: () => exporter.list(),
      freeTid: (t) => exporter.freeTid(t),
    };
    const s2 = new IscsiBoardStorage({ store, exporter: failing, recorded: () => leases });
    await expectCode(s2.attach(lease('l-exp', 'bpi-4'), board('bpi-4'), image), 'EXPORT_FAILED', /simulated/);
    await nothingFor('l-exp');
  });

  it('an image in use cannot be removed (409); once released it can', async () => {
    const l = lease('l-use', 'bpi-5');
    await attach(l, board('bpi-5'));
    expect(await storage.imageInUse('test')).toEqual(expect.arrayContaining(['l-one', 'l-use']));
    const err = await storage.removeImage('test').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).status).toBe(409);
    expect((err as Error).message).toMatch(/image test is in use by leases l-one, l-use|image test is in use by leases l-use, l-one/);
    expect(await storage.imageInUse('liar')).toEqual([]);
    await storage.removeImage('liar'); // never imported successfully: nothing to drop, not an error
  });
});

describe('reconcile and tgtd restarts', () => {
  it('after kill -9 the recorded targets come back exactly as recorded', async () => {
    const live = leases.filter((l) => l.iscsi && l.state !== 'released');
    expect(live.length).toBeGreaterThanOrEqual(2);
    const pid = daemon.pid!;
    const before = daemon.restarts.length;
    process.kill(pid, 'SIGKILL');
    await restarted(daemon, before);
    expect(daemon.pid).not.toBe(pid);
    const targets = await exporter.list();
    for (const l of live) {
      expect(targets.find((t) => t.iqn === l.iscsi!.iqn)).toMatchObject({ tid: l.iscsi!.tid, disk: l.iscsi!.disk, acl: [l.iscsi!.initiator] });
      expect(iscsiInq(portal, l.iscsi!.iqn, l.iscsi!.initiator, chapOf(l)).ok).toBe(true);
    }
    console.log(`tgtd restart with ${live.length} targets: ${daemon.restarts.at(-1)!.downMs} ms from death to targets re-created`);
  });

  it('reconcile removes orphan targets, quarantines orphan disks, re-creates missing targets, reports lost disks', async () => {
    const use = leases.find((l) => l.id === 'l-use')!;
    // An orphan target and disk (a lease the store no longer knows), a live lease whose target is gone,
    // and a live lease whose disk is gone.
    await store.clone({ image: 'test', path: join(image.dir, 'root.img') }, 'l-ghost');
    await exporter.ensure({ tid: 40, iqn: 'iqn.2026-11.cloud.dozen:bpi-9.l-ghost', disk: store.diskPath('l-ghost'), initiator: 'iqn.2026-11.cloud.dozen:bpi-9', chapUser: 'l-ghost', chapSecret: 'Ghost1234567890abcdefgh' });
    await exporter.ensure({ tid: 41, iqn: 'iqn.other.example:not-ours', disk: store.diskPath('l-ghost'), initiator: 'iqn.x:y', chapUser: 'other', chapSecret: 'Other1234567890abcdefgh' });
    await exporter.remove(use.iscsi!.iqn);
    const lost = lease('l-lost', 'bpi-8');
    lost.iscsi = { ...use.iscsi!, iqn: 'iqn.2026-11.cloud.dozen:bpi-8.l-lost', tid: 42, disk: store.diskPath('l-lost'), chapUser: 'l-lost' };
    const { fixed, missing } = await storage.reconcile(leases);
    expect(fixed).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^removed target iqn.2026-11.cloud.dozen:bpi-9.l-ghost \(tid 40\): no live lease l-ghost holds it$/),
        expect.stringMatching(/^quarantined disk l-ghost \(image test\) as l-ghost@[0-9TZ-]+: no live lease holds it$/),
        `lease l-use: target ${use.iscsi!.iqn} re-created`,
        'lease l-lost: its disk is missing; it cannot be restored (reimage the lease)',
      ]),
    );
    expect(missing).toEqual(['l-lost']);
    // The orphan's bytes are kept aside, not destroyed, until the admin removes them.
    const aside = await store.listQuarantine();
    expect(aside).toEqual([expect.objectContaining({ diskId: 'l-ghost', image: 'test' })]);
    expect(await store.size('l-ghost')).toBeNull();
    expect(await store.removeQuarantined(aside[0]!.name)).toBe(true);
    expect(await store.listQuarantine()).toEqual([]);
    const iqns = (await exporter.list()).map((t) => t.iqn);
    expect(iqns).toContain(use.iscsi!.iqn);
    expect(iqns).toContain('iqn.other.example:not-ours'); // not ours: left alone
    expect(iqns).not.toContain('iqn.2026-11.cloud.dozen:bpi-9.l-ghost');
    await exporter.remove('iqn.other.example:not-ours', 'other');
    lost.state = 'released';
    // A second reconcile finds nothing more to do.
    expect(await storage.reconcile(leases)).toEqual({ fixed: [], missing: [] });
  });
});

describe('a data disk per lease (LUN 2)', () => {
  const DATA = 64 * 1024 * 1024;
  let dd: Lease;
  let dd2: Lease;
  const expectCode = async (p: Promise<unknown>, code: StorageError['code'], msg: RegExp) => {
    const err = await p.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).code).toBe(code);
    expect((err as Error).message).toMatch(msg);
  };

  it('attach with dataDiskBytes: a blank sparse disk beside the root, LUN 2 of the same target; a retry reuses it', async () => {
    dd = lease('l-data', 'bpi-6');
    dd.iscsi = await storage.attach(dd, board('bpi-6'), image, { dataDiskBytes: DATA });
    const rec = dd.iscsi;
    expect(rec).toMatchObject({ disk: store.diskPath('l-data'), dataDisk: store.diskPath('l-data-data'), iqn: 'iqn.2026-11.cloud.dozen:bpi-6.l-data', chapUser: 'l-data' });
    const info = await store.size('l-data-data');
    expect(info).toMatchObject({ id: 'l-data-data', sizeBytes: DATA });
    expect(info!.image).toBeUndefined();
    expect(statSync(rec.dataDisk!).blocks * 512).toBeLessThanOrEqual(64 * 1024);
    expect((await exporter.list()).find((t) => t.iqn === rec.iqn)).toMatchObject({ tid: rec.tid, disk: rec.disk, dataDisk: rec.dataDisk });
    // What the board's initiator sees: LUN 1 the image's 32 MiB root, LUN 2 the data disk.
    expect(lunBytes(dd, 1)).toBe(32 * 1024 * 1024);
    expect(lunBytes(dd, 2)).toBe(DATA);
    expect(lunBytes(dd, 3)).toEqual(expect.any(String)); // nothing more
    // The board's OS is told which disk is the data disk: LUN 2 by the path udev gives it, nothing else.
    expect(storage.kernelArgs(rec, image)).toContain(` dozen.docker_disk=/dev/disk/by-path/ip-${rec.portal}-iscsi-${rec.iqn}-lun-2`);
    // A data disk is no user of an image.
    const users = await storage.imageInUse('test');
    expect(users).toContain('l-data');
    expect(users).not.toContain('l-data-data');
    // A retried attach: the same record, target and data disk (with what the board wrote).
    writeAt(rec.dataDisk!, 1024 * 1024, 'btrfs was here');
    expect(await storage.attach(dd, board('bpi-6'), image, { dataDiskBytes: DATA })).toEqual(rec);
    expect(readAt(rec.dataDisk!, 1024 * 1024, 14)).toBe('btrfs was here');
    expect((await exporter.list()).filter((t) => t.iqn === rec.iqn)).toHaveLength(1);
  });

  it('without dataDiskBytes nothing changes: no data disk, no LUN 2', async () => {
    const one = leases.find((x) => x.id === 'l-one')!;
    expect(one.iscsi!.dataDisk).toBeUndefined();
    expect(await store.size('l-one-data')).toBeNull();
    expect((await exporter.list()).find((t) => t.iqn === one.iscsi!.iqn)).toMatchObject({ disk: one.iscsi!.disk, dataDisk: undefined });
    expect(lunBytes(one, 1)).toBe(32 * 1024 * 1024);
    expect(lunBytes(one, 2)).toEqual(expect.any(String));
    expect(storage.kernelArgs(one.iscsi!, image)).not.toContain('dozen.docker_disk');
  });

  it('a failed attach removes the disks it made, and only those', async () => {
    const failing: TargetExporter = {
      portal: exporter.portal,
      ensure: async () => {
        throw new StorageError('EXPORT_FAILED', 'tgtd refused target (simulated)');
      },
      remove: (iqn, user) => exporter.remove(iqn, user),
      list: () => exporter.list(),
      freeTid: (t) => exporter.freeTid(t),
    };
    const s2 = new IscsiBoardStorage({ store, exporter: failing, recorded: () => leases });
    // Both made by this call: both go.
    const f1 = lease('l-dfail1', 'bpi-7');
    await expectCode(s2.attach(f1, board('bpi-7'), image, { dataDiskBytes: DATA }), 'EXPORT_FAILED', /simulated/);
    expect(await store.size('l-dfail1')).toBeNull();
    expect(await store.size('l-dfail1-data')).toBeNull();
    // An earlier attempt's data disk stays for the retry; this call's clone goes.
    const f2 = lease('l-dfail2', 'bpi-7');
    await store.createBlank('l-dfail2-data', DATA);
    await expectCode(s2.attach(f2, board('bpi-7'), image, { dataDiskBytes: DATA }), 'EXPORT_FAILED', /simulated/);
    expect(await store.size('l-dfail2')).toBeNull();
    expect(await store.size('l-dfail2-data')).toMatchObject({ sizeBytes: DATA });
    // A size the store refuses fails after the clone was made: the clone goes, no target is left.
    const f3 = lease('l-dfail3', 'bpi-7');
    await expectCode(storage.attach(f3, board('bpi-7'), image, { dataDiskBytes: 1000 }), 'BAD_SIZE', /disk l-dfail3-data: a blank disk needs a positive whole number of 512-byte sectors/);
    expect(await store.size('l-dfail3')).toBeNull();
    expect(await store.size('l-dfail3-data')).toBeNull();
    expect((await exporter.list()).some((t) => t.iqn.endsWith('.l-dfail3'))).toBe(false);
    // The leases end; l-dfail2's data disk is now an orphan (the reconcile below).
    for (const f of [f1, f2, f3]) f.state = 'released';
  });

  it('after kill -9 LUN 2 comes back with the target', async () => {
    const pid = daemon.pid!;
    const before = daemon.restarts.length;
    process.kill(pid, 'SIGKILL');
    await restarted(daemon, before);
    expect((await exporter.list()).find((t) => t.iqn === dd.iscsi!.iqn)).toMatchObject({ tid: dd.iscsi!.tid, disk: dd.iscsi!.disk, dataDisk: dd.iscsi!.dataDisk });
    expect(lunBytes(dd, 2)).toBe(DATA);
    expect(readAt(dd.iscsi!.dataDisk!, 1024 * 1024, 14)).toBe('btrfs was here');
  });

  it('reconcile keeps a live lease’s data disk, quarantines an orphan one, restores a lost LUN 2, and re-makes a vanished data disk blank', async () => {
    dd2 = lease('l-data2', 'bpi-8');
    dd2.iscsi = await storage.attach(dd2, board('bpi-8'), image, { dataDiskBytes: DATA });
    expect(lunBytes(dd2, 2)).toBe(DATA);
    // l-data's target loses its LUN 2; l-data2's data disk vanishes (tgtd still holds the file open).
    execFileSync('tgtadm', ['-C', String(daemon.adm.controlPort), '--lld', 'iscsi', '--op', 'delete', '--mode', 'logicalunit', '--tid', String(dd.iscsi!.tid), '--lun', '2']);
    expect((await exporter.list()).find((t) => t.iqn === dd.iscsi!.iqn)?.dataDisk).toBeUndefined();
    expect(await store.destroy('l-data2-data')).toBe(true);
    const { fixed, missing } = await storage.reconcile(leases);
    expect(missing).toEqual([]);
    expect(fixed).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^quarantined disk l-dfail2-data \(data disk of lease l-dfail2\) as l-dfail2-data@[0-9TZ-]+: no live lease holds it$/),
        `lease l-data: target ${dd.iscsi!.iqn} replaced`,
        `lease l-data2: its data disk was missing; re-made it blank (${REMADE_DATA_BYTES} bytes): its data is lost, and the image formats it again at the next boot`,
        `lease l-data2: target ${dd2.iscsi!.iqn} re-created`,
      ]),
    );
    expect(fixed).toHaveLength(4);
    // The live lease's data disk, and what was on it, stay; the orphan is aside, not destroyed.
    expect(readAt(store.diskPath('l-data-data'), 1024 * 1024, 14)).toBe('btrfs was here');
    expect(lunBytes(dd, 2)).toBe(DATA);
    expect((await store.listQuarantine()).map((q) => q.diskId)).toEqual(['l-dfail2-data']);
    // The re-made disk is blank, of the configured size, and it is what LUN 2 serves now (not the vanished file).
    expect(await store.size('l-data2-data')).toMatchObject({ sizeBytes: REMADE_DATA_BYTES });
    expect(statSync(store.diskPath('l-data2-data')).blocks * 512).toBeLessThanOrEqual(64 * 1024);
    expect(lunBytes(dd2, 2)).toBe(REMADE_DATA_BYTES);
    expect(await storage.reconcile(leases)).toEqual({ fixed: [], missing: [] });
    for (const q of await store.listQuarantine()) await store.removeQuarantined(q.name);
  });

  it('detach removes the target and both disks, also without a record', async () => {
    await storage.detach({ ...dd2, iscsi: undefined });
    await storage.detach(dd);
    for (const l of [dd, dd2]) {
      expect((await exporter.list()).map((t) => t.iqn)).not.toContain(l.iscsi!.iqn);
      expect(await store.size(l.id)).toBeNull();
      expect(await store.size(`${l.id}-data`)).toBeNull();
      l.state = 'released';
      delete l.iscsi;
    }
    expect(await storage.reconcile(leases)).toEqual({ fixed: [], missing: [] });
  });
});

describe('a container lease’s persistent volume (/data on shared boards)', () => {
  const VOL = 32 * 1024 * 1024;
  let v: Lease;
  const volChap = (l: Lease) => ({ ...l, iscsi: l.volume });

  it('attachVolume: a blank sparse disk of its own, exported to the board alone; the same board again keeps the record', async () => {
    v = { id: 'l-vol1', tenantId: 't1', kind: 'container', image: 'armhf-base', sshKeys: [], hostname: 'c', state: 'active', createdAt: new Date().toISOString() };
    leases.push(v);
    const a = board('sb-a');
    v.volume = await storage.attachVolume(v, a, VOL);
    expect(v.volume).toMatchObject({ boardId: 'sb-a', iqn: expect.stringMatching(/:sb-a\.l-vol1$/), chapUser: 'l-vol1-vol', disk: store.diskPath('l-vol1-vol') });
    expect(lunBytes(volChap(v), 1)).toBe(VOL);
    writeAt(v.volume.disk, 4096, 'tenant data');
    expect(await storage.attachVolume(v, a, VOL)).toEqual(v.volume);
  });

  it('moving it to another board is a fence: the old target and secret stop working, the bytes stay', async () => {
    const old = volChap({ ...v });
    v.volume = { ...v.volume!, formatted: true }; // as the first board's helper reported
    v.volume = await storage.attachVolume(v, { ...board('sb-b'), ip: '10.1.2.4' }, VOL);
    expect(v.volume.formatted).toBe(true); // never formatted again on the new board
    expect(v.volume.iqn).toMatch(/:sb-b\.l-vol1$/);
    expect(v.volume.chapSecret).not.toBe(old.iscsi!.chapSecret);
    expect((await exporter.list()).map((t) => t.iqn)).not.toContain(old.iscsi!.iqn);
    expect(lunBytes(old, 1)).toMatch(/exit/);
    expect(lunBytes(volChap(v), 1)).toBe(VOL);
    expect(readAt(v.volume.disk, 4096, 11)).toBe('tenant data');
  });

  it('reconcile and a tgtd kill -9 keep it: the disk is never quarantined, the target comes back', async () => {
    expect(await storage.reconcile(leases)).toEqual({ fixed: [], missing: [] });
    const before = daemon.restarts.length;
    process.kill(daemon.pid!, 'SIGKILL');
    await restarted(daemon, before);
    expect((await exporter.list()).find((t) => t.iqn === v.volume!.iqn)).toMatchObject({ tid: v.volume!.tid, disk: v.volume!.disk });
    expect(lunBytes(volChap(v), 1)).toBe(VOL);
    // While it moves (migrating) it is held too.
    v.state = 'migrating';
    expect(await storage.reconcile(leases)).toEqual({ fixed: [], missing: [] });
    v.state = 'active';
  });

  it('destroyVolume ends target and disk, idempotently; a released lease’s volume left behind is quarantined', async () => {
    await storage.destroyVolume(v);
    await storage.destroyVolume(v);
    expect((await exporter.list()).map((t) => t.iqn)).not.toContain(v.volume!.iqn);
    expect(await store.size('l-vol1-vol')).toBeNull();
    // A lease whose volume vanished gets an error, never a blank one in its place.
    await expect(storage.attachVolume(v, board('sb-a'), VOL)).rejects.toThrow(/volume is missing from storage; it is not re-made/);
    expect(await store.size('l-vol1-vol')).toBeNull();
    v.state = 'released';
    const w: Lease = { ...v, id: 'l-vol2', state: 'active', volume: undefined };
    leases.push(w);
    w.volume = await storage.attachVolume(w, board('sb-a'), VOL);
    w.state = 'released';
    const { fixed } = await storage.reconcile(leases);
    expect(fixed).toEqual(expect.arrayContaining([expect.stringMatching(/^removed target .*l-vol2/), expect.stringMatching(/^quarantined disk l-vol2-vol/)]));
    for (const q of await store.listQuarantine()) await store.removeQuarantined(q.name);
  });
});
