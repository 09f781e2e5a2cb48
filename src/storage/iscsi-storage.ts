import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Image } from '../images/catalog.js';
import type { BoardStorage } from '../leases/ports.js';
import { log } from '../log.js';
import type { Board, IscsiRecord, Lease, VolumeRecord } from '../store/schema.js';
import { StorageError, isStoreImageOf, storeImageName, type DiskInfo, type DiskStore } from './disk-store.js';
import type { TgtDaemon } from './tgt-daemon.js';
import type { TargetExporter } from './tgt-exporter.js';

export interface IscsiBoardStorageOptions {
  store: DiskStore;
  exporter: TargetExporter;
  /** When given, every tgtd restart re-creates the targets of `recorded()` leases. */
  daemon?: TgtDaemon;
  /** The leases whose targets must exist (live board leases with an `iscsi` record), read from the store. */
  recorded: () => Lease[];
  /** Naming authority of target and initiator names: `<prefix>:<board>.<lease>`, `<prefix>:<board>`. */
  iqnPrefix?: string;
  /** Size of a lease's disk; default: the image's own size. Bigger disks get their ext2/3/4 grown. */
  diskSizeBytes?: number;
  /**
   * Who may log in to a lease's target besides its CHAP secret: `address` — the board's reserved IP
   * alone (the network driver lets no other port send from it); `name` — the initiator name, which any
   * initiator can claim (for `none`, or tests logging in from the controller).
   */
  acl?: 'address' | 'name';
  /**
   * Size reconcile gives a live lease's data disk that vanished and must be re-made blank: a record keeps
   * the data disk's path, not its size. Default DEFAULT_DATA_DISK_BYTES; attach takes its size per call.
   */
  dataDiskBytes?: number;
}

/** What attach may add to the lease's root disk. */
export interface AttachOptions {
  /** Also a blank, sparse disk of this size as LUN 2 of the lease's target (a shared board's Docker data-root). */
  dataDiskBytes?: number;
}

export const DEFAULT_IQN_PREFIX = 'iqn.2026-11.cloud.dozen';
/** Lease states in which a lease holds a disk (the same "live" states as the lease service's). */
const HOLDS_DISK: Array<Lease['state']> = ['provisioning', 'active', 'reimaging', 'releasing', 'error'];
/** A lease's data disk is `<lease id>-data` in the store (lease ids, `l-<10 hex>`, never end so). */
const DATA_DISK_SUFFIX = '-data';
/** The size of a re-made data disk when none is configured: sparse, so it costs only what is written. */
export const DEFAULT_DATA_DISK_BYTES = 8 * 1024 ** 3; // as containers.shared.dataDiskMb's default

/** The store id of a lease's data disk (LUN 2). */
export function dataDiskId(leaseId: string): string {
  return `${leaseId}${DATA_DISK_SUFFIX}`;
}

/** A container lease's persistent volume is `<lease id>-vol` in the store. */
const VOLUME_SUFFIX = '-vol';
/** Container lease states in which the lease holds its volume (migrating: it is between two boards). */
const HOLDS_VOLUME: Array<Lease['state']> = ['provisioning', 'active', 'reimaging', 'releasing', 'migrating', 'error'];

/** The store id of a container lease's persistent volume (/data). */
export function volumeDiskId(leaseId: string): string {
  return `${leaseId}${VOLUME_SUFFIX}`;
}

/** The target's own CHAP account for mutual CHAP (tgt account names are global: one per lease). */
export function targetAccount(chapUser: string): string {
  return `${chapUser}-target`;
}

/** The initiator name a board's OS must use (it gets it on the kernel command line). */
export function initiatorName(boardId: string, prefix = DEFAULT_IQN_PREFIX): string {
  return `${prefix}:${boardId}`;
}

/**
 * BoardStorage over a DiskStore and a TargetExporter: a lease's root disk is a clone of its image's
 * disk (id = lease id), exported as one target bound to the board's initiator name with a CHAP secret
 * made for this lease; a lease may also have a blank data disk (id = `<lease id>-data`) as LUN 2 of that
 * target. Attach and detach are idempotent and serialised; a failed attach removes what it made.
 */
export class IscsiBoardStorage implements BoardStorage {
  private readonly prefix: string;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: IscsiBoardStorageOptions) {
    this.prefix = o.iqnPrefix ?? DEFAULT_IQN_PREFIX;
    o.daemon?.onRestart(() => this.restoreTargets());
  }

  /** One attach/detach/reconcile at a time: target ids are allocated from what tgtd has now. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => {});
    return p;
  }

  attach(lease: Lease, board: Board, image: Image, opts: AttachOptions = {}): Promise<IscsiRecord> {
    return this.serial(() => this.attachNow(lease, board, image, opts));
  }

  private async attachNow(lease: Lease, board: Board, image: Image, opts: AttachOptions): Promise<IscsiRecord> {
    const m = image.manifest.arches[board.arch];
    if (!m) throw new StorageError('WRONG_ARCH', `board ${board.id} is ${board.arch} but image ${image.name} has no ${board.arch} build`);
    if (!m.rootDisk) throw new StorageError('NO_ROOT_DISK', `image ${image.name} has no ${board.arch} root disk (manifest rootDisk) to export`);
    const diskId = lease.id;
    const hadDisk = !!(await this.o.store.size(diskId));
    const disk = await this.o.store.clone(
      { image: storeImageName(image.name, board.arch), path: join(image.dir, m.rootDisk), sha256: image.manifest.sha256?.[m.rootDisk], arch: board.arch },
      diskId,
      { sizeBytes: this.o.diskSizeBytes },
    );
    const iqn = `${this.prefix}:${board.id}.${lease.id}`;
    const portal = `${this.o.exporter.portal.ip}:${this.o.exporter.portal.port}`;
    const dataId = dataDiskId(lease.id);
    let hadData = true;
    try {
      let data: DiskInfo | undefined;
      if (opts.dataDiskBytes !== undefined) {
        hadData = !!(await this.o.store.size(dataId));
        data = await this.o.store.createBlank(dataId, opts.dataDiskBytes);
      }
      const old = lease.iscsi;
      // A retried attach keeps the record (and the secret already in the board's boot script); a fresh
      // clone (first attach, reimage) gets a fresh record, so a reimage also changes the secret.
      const reuse = hadDisk && old && old.iqn === iqn && old.disk === disk.path && old.dataDisk === data?.path && old.portal === portal;
      const rec: IscsiRecord = reuse
        ? old
        : {
            disk: disk.path,
            iqn,
            tid: await this.o.exporter.freeTid(this.tidsTaken(lease.id)),
            initiator: initiatorName(board.id, this.prefix),
            ...(this.o.acl === 'address' ? { initiatorAddress: board.ip } : {}),
            chapUser: lease.id,
            chapSecret: newSecret(),
            // Mutual CHAP: the board's initiator logs in only to a target that knows this secret too,
            // so an impostor answering on the portal's address learns nothing and serves no root.
            targetUser: targetAccount(lease.id),
            targetSecret: newSecret(),
            portal,
            ...(data ? { dataDisk: data.path } : {}),
          };
      if (!reuse) await this.o.exporter.remove(iqn, rec.chapUser, rec.targetUser); // an older target of this lease had other secrets
      const how = await this.o.exporter.ensure(rec);
      log.info({ lease: lease.id, board: board.id, iqn, tid: rec.tid, disk: disk.path, dataDisk: data?.path, target: how }, 'storage: lease disk attached');
      return rec;
    } catch (err) {
      // What this call made goes again; what an earlier attempt made stays for the retry.
      if (!hadDisk) await this.o.store.destroy(diskId).catch((e) => log.error({ err: e, disk: diskId }, 'storage: rollback of the clone failed'));
      if (!hadData) await this.o.store.destroy(dataId).catch((e) => log.error({ err: e, disk: dataId }, 'storage: rollback of the data disk failed'));
      throw err;
    }
  }

  /**
   * Every boot gets its own CHAP secret: a secret read from one boot's command line is worthless after
   * the next power cycle. The target is re-made with the new account (tgtd cannot change a password in
   * place); the board is about to reboot, so no live session is lost.
   */
  newBootSecret(lease: Lease): Promise<IscsiRecord> {
    return this.serial(async () => {
      const old = lease.iscsi;
      if (!old) throw new Error(`lease ${lease.id} has no iSCSI target`);
      const rec: IscsiRecord = { ...old, chapSecret: newSecret(), targetUser: targetAccount(old.chapUser), targetSecret: newSecret() };
      await this.o.exporter.remove(old.iqn, old.chapUser, old.targetUser);
      await this.o.exporter.ensure(rec);
      return rec;
    });
  }

  /**
   * A container lease's persistent volume, exported to `board` alone: its disk (`<lease>-vol`, blank and
   * sparse the first time) as LUN 1 of its own target. The same board again keeps the record (a
   * reimage, a restart); another board gets a new target with new secrets, and the old target goes
   * first, closing the old board's session: a board that was taken for dead but still runs can neither
   * keep writing nor log in again (the fence before a failover re-export).
   */
  attachVolume(lease: Lease, board: Board, sizeBytes: number): Promise<VolumeRecord> {
    return this.serial(async () => {
      const id = volumeDiskId(lease.id);
      const found = await this.o.store.size(id);
      // Made blank once, when the lease first gets it; a volume that vanished is never re-made behind its tenant's back.
      if (!found && lease.volume) throw new StorageError('DISK_MISSING', `lease ${lease.id}: its /data volume is missing from storage; it is not re-made`);
      const disk = found ?? (await this.o.store.createBlank(id, sizeBytes));
      const iqn = `${this.prefix}:${board.id}.${lease.id}`;
      const portal = `${this.o.exporter.portal.ip}:${this.o.exporter.portal.port}`;
      const old = lease.volume;
      if (old && old.boardId === board.id && old.iqn === iqn && old.disk === disk.path && old.portal === portal) {
        await this.o.exporter.ensure(old);
        return old;
      }
      if (old) await this.o.exporter.remove(old.iqn, old.chapUser, old.targetUser);
      const user = `${lease.id}${VOLUME_SUFFIX}`;
      await this.o.exporter.remove(iqn, user, targetAccount(user)); // a half-made one from a crashed attach
      const rec: VolumeRecord = {
        boardId: board.id,
        disk: disk.path,
        iqn,
        tid: await this.o.exporter.freeTid(this.tidsTaken(lease.id)),
        initiator: initiatorName(board.id, this.prefix),
        ...(this.o.acl === 'address' ? { initiatorAddress: board.ip } : {}),
        chapUser: user,
        chapSecret: newSecret(),
        targetUser: targetAccount(user),
        targetSecret: newSecret(),
        portal,
        ...(old?.formatted ? { formatted: true } : {}),
      };
      await this.o.exporter.ensure(rec);
      log.info({ lease: lease.id, board: board.id, iqn, tid: rec.tid, disk: disk.path, from: old?.boardId }, 'storage: volume exported');
      return rec;
    });
  }

  /** Ends a container lease's volume: its target (closing any session) and its disk. Idempotent. */
  destroyVolume(lease: Lease): Promise<void> {
    return this.serial(async () => {
      const v = lease.volume;
      const user = `${lease.id}${VOLUME_SUFFIX}`;
      const iqn = v?.iqn ?? (await this.o.exporter.list()).find((t) => this.leaseOf(t.iqn) === lease.id)?.iqn;
      const removed = iqn ? await this.o.exporter.remove(iqn, v?.chapUser ?? user, v?.targetUser ?? targetAccount(user)) : false;
      const destroyed = await this.o.store.destroy(volumeDiskId(lease.id));
      if (removed || destroyed) log.info({ lease: lease.id, iqn, target: removed, disk: destroyed }, 'storage: volume destroyed');
    });
  }

  /** Target ids recorded by leases other than `except` (root disks and volumes). */
  private tidsTaken(except: string): number[] {
    return this.o.recorded().flatMap((l) => (l.id === except ? [] : [l.iscsi?.tid, l.volume?.tid].filter((t): t is number => t !== undefined)));
  }

  detach(lease: Lease): Promise<void> {
    return this.serial(async () => {
      // Without a record (an attach that crashed before it was stored) the lease id still finds them.
      const iqn = lease.iscsi?.iqn ?? (await this.o.exporter.list()).find((t) => this.leaseOf(t.iqn) === lease.id)?.iqn;
      const user = lease.iscsi?.chapUser ?? lease.id;
      const removed = iqn ? await this.o.exporter.remove(iqn, user, lease.iscsi?.targetUser ?? targetAccount(user)) : false;
      const destroyed = await this.o.store.destroy(lease.id);
      const dataDestroyed = await this.o.store.destroy(dataDiskId(lease.id));
      if (removed || destroyed || dataDestroyed) log.info({ lease: lease.id, iqn, target: removed, disk: destroyed, dataDisk: dataDestroyed }, 'storage: lease disk detached');
    });
  }

  kernelArgs(rec: IscsiRecord, image: Image): string {
    const [ip, port] = splitPortal(rec.portal);
    // Debian initramfs-tools' open-iscsi script reads these (and our test image's /init does too).
    const args = [
      `iscsi_initiator=${rec.initiator}`,
      `iscsi_target_name=${rec.iqn}`,
      `iscsi_target_ip=${ip}`,
      `iscsi_target_port=${port}`,
      'iscsi_target_group=1',
      `iscsi_username=${rec.chapUser}`,
      `iscsi_password=${rec.chapSecret}`,
      ...(rec.targetUser && rec.targetSecret ? [`iscsi_in_username=${rec.targetUser}`, `iscsi_in_password=${rec.targetSecret}`] : []),
    ];
    // A data disk (LUN 2) is named by the path udev gives it: the image takes that disk and no other
    // (images/docker-host's dozen-docker-disk), never a look-alike on the board's own storage.
    if (rec.dataDisk) args.push(`dozen.docker_disk=/dev/disk/by-path/ip-${ip}:${port}-iscsi-${rec.iqn}-lun-2`);
    // An image that names its root itself (root=UUID=... in its cmdline) keeps it; else the LUN's disk.
    if (!/(^|\s)root=/.test(image.manifest.cmdline)) args.push('root=/dev/sda', 'rw');
    return args.join(' ');
  }

  /**
   * Make tgtd and the store match the recorded leases. Never destroys a disk: one no live lease holds is
   * quarantined (the state may be older than the disks, or belong to another server); a lease holds its
   * root disk and its data disk (`<lease>-data`). Leases whose root disk is gone are named in `missing`,
   * for the caller to mark failed. A live lease whose data disk is gone gets a new blank one (it began
   * blank, and the image formats a blank disk at boot; Docker's data on it is lost) and its target
   * re-made on it: reported in `fixed`, and in `missing` only when no new one can be made.
   */
  reconcile(leases: Lease[]): Promise<{ fixed: string[]; missing: string[] }> {
    return this.serial(async () => {
      const fixed: string[] = [];
      const missing: string[] = [];
      const holders = new Map(leases.filter((l) => l.kind === 'board' && HOLDS_DISK.includes(l.state)).map((l) => [l.id, l]));
      const volumes = new Map(leases.filter((l) => l.kind === 'container' && HOLDS_VOLUME.includes(l.state)).map((l) => [l.id, l]));
      for (const t of await this.o.exporter.list()) {
        const leaseId = this.leaseOf(t.iqn);
        if (leaseId === null) continue; // not one of ours
        if (volumes.get(leaseId)?.volume?.iqn === t.iqn) continue;
        if (!holders.get(leaseId)?.iscsi) {
          await this.o.exporter.remove(t.iqn, t.accounts[0]);
          fixed.push(`removed target ${t.iqn} (tid ${t.tid}): no live lease ${leaseId} holds it`);
        }
      }
      for (const d of await this.o.store.list()) {
        const dataOf = d.id.endsWith(DATA_DISK_SUFFIX) ? d.id.slice(0, -DATA_DISK_SUFFIX.length) : null;
        const volumeOf = d.id.endsWith(VOLUME_SUFFIX) ? d.id.slice(0, -VOLUME_SUFFIX.length) : null;
        if (holders.has(d.id) || (dataOf !== null && holders.has(dataOf)) || (volumeOf !== null && volumes.has(volumeOf))) continue;
        const name = await this.o.store.quarantine(d.id);
        if (name) fixed.push(`quarantined disk ${d.id} (${d.image ? `image ${d.image}` : dataOf ? `data disk of lease ${dataOf}` : 'image ?'}) as ${name}: no live lease holds it`);
      }
      for (const l of holders.values()) {
        if (!l.iscsi) continue;
        if (!(await this.o.store.size(l.id))) {
          fixed.push(`lease ${l.id}: its disk is missing; it cannot be restored (reimage the lease)`);
          missing.push(l.id);
          continue;
        }
        if (l.iscsi.dataDisk && !(await this.o.store.size(dataDiskId(l.id)))) {
          const bytes = this.o.dataDiskBytes ?? DEFAULT_DATA_DISK_BYTES;
          const made = await this.o.store.createBlank(dataDiskId(l.id), bytes).then(
            () => null,
            (err: Error) => err,
          );
          if (made) {
            fixed.push(`lease ${l.id}: its data disk is missing and could not be re-made blank: ${made.message}`);
            missing.push(l.id);
            continue;
          }
          // tgtd may still hold the vanished file open under the same path: a target that looks
          // unchanged would keep serving it, so it is re-made on the new disk.
          await this.o.exporter.remove(l.iscsi.iqn, l.iscsi.chapUser, l.iscsi.targetUser);
          fixed.push(`lease ${l.id}: its data disk was missing; re-made it blank (${bytes} bytes): its data is lost, and the image formats it again at the next boot`);
        }
        const how = await this.o.exporter.ensure(l.iscsi).catch((err: Error) => `failed: ${err.message}`);
        if (how !== 'unchanged') fixed.push(`lease ${l.id}: target ${l.iscsi.iqn} ${how === 'created' ? 're-created' : how}`);
      }
      for (const l of volumes.values()) {
        if (!l.volume) continue;
        if (!(await this.o.store.size(volumeDiskId(l.id)))) {
          // Never re-made blank behind the tenant's back: its /data is what the lease promised to keep.
          fixed.push(`lease ${l.id}: its volume (/data) is missing from storage; it is not re-made`);
          missing.push(l.id);
          continue;
        }
        const how = await this.o.exporter.ensure(l.volume).catch((err: Error) => `failed: ${err.message}`);
        if (how !== 'unchanged') fixed.push(`lease ${l.id}: volume target ${l.volume.iqn} ${how === 'created' ? 're-created' : how}`);
      }
      fixed.push(...(await this.o.store.sweep()));
      for (const f of fixed) log.warn(`storage reconcile: ${f}`);
      return { fixed, missing };
    });
  }

  /** Leases (ids) whose disks were cloned from `image`: while there are any it must not be deleted. Data disks have no image. */
  async imageInUse(image: string): Promise<string[]> {
    return (await this.o.store.list()).filter((d) => isStoreImageOf(d.image, image)).map((d) => d.id);
  }

  /** Drop the store's copies of an image; refused with IMAGE_IN_USE (409) while leases use it. */
  async removeImage(image: string): Promise<void> {
    const users = await this.imageInUse(image);
    if (users.length) throw new StorageError('IMAGE_IN_USE', `image ${image} is in use by lease${users.length > 1 ? 's' : ''} ${users.join(', ')}`, { details: { leases: users } });
    await this.o.store.removeImage(image);
  }

  /** After a tgtd restart: every recorded target, exactly as recorded (same tid, iqn, secret, LUN 1 and LUN 2). */
  private async restoreTargets(): Promise<void> {
    const recs = [
      ...this.o.recorded().flatMap((l) => (l.kind === 'board' && HOLDS_DISK.includes(l.state) && l.iscsi ? [{ id: l.id, rec: l.iscsi }] : [])),
      ...this.o.recorded().flatMap((l) => (l.kind === 'container' && HOLDS_VOLUME.includes(l.state) && l.volume ? [{ id: l.id, rec: l.volume }] : [])),
    ];
    for (const { id, rec } of recs) {
      await this.o.exporter.ensure(rec).catch((err) => log.error({ err, lease: id }, 'storage: could not re-create a target after the tgtd restart'));
    }
    log.info({ targets: recs.length }, 'storage: targets re-created after tgtd restart');
  }

  /** The lease id in one of our target names, or null for a target that is not ours. */
  private leaseOf(iqn: string): string | null {
    if (!iqn.startsWith(`${this.prefix}:`)) return null;
    const name = iqn.slice(this.prefix.length + 1);
    const dot = name.lastIndexOf('.');
    return dot > 0 ? name.slice(dot + 1) : null;
  }
}

/** 24 letters and digits (~143 bits): safe on a kernel command line and in a U-Boot script. */
function newSecret(): string {
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';
  const bytes = randomBytes(48);
  let s = '';
  for (const b of bytes) {
    if (b < 4 * alphabet.length) s += alphabet[b % alphabet.length];
    if (s.length === 24) break;
  }
  return s.length === 24 ? s : newSecret();
}

function splitPortal(p: string): [string, string] {
  const i = p.lastIndexOf(':');
  return [p.slice(0, i), p.slice(i + 1)];
}
