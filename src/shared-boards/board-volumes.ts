/**
 * Persistent /data for container leases on shared boards (issue #15): an iSCSI LUN per lease on the
 * controller's storage, logged in by the one board the container runs on, ext4, bound at /data.
 * Why a LUN and not an NFS export: a tenant is root on the boot network, and iSCSI here has per-lease
 * mutual CHAP whose secret changes at every move, so only the board the lease is on can reach its data;
 * NFS (AUTH_SYS) trusts source addresses, which prove nothing. And moving the lease is a fence by
 * construction: the old target is deleted (closing the old board's session) before the new one exists.
 */
import type { ContainerHost } from '../containers/host.js';
import { ensureImage, type ContainerImageSource } from '../containers/images.js';
import type { LeaseVolumes } from '../containers/volumes.js';
import type { Logger } from '../log.js';
import type { IscsiBoardStorage } from '../storage/iscsi-storage.js';
import type { Lease, VolumeRecord } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { runOnBoard } from './volume-helper.js';

/** Where a lease's volume is mounted on its board. */
export function volumeMountPath(leaseId: string): string {
  return `/var/lib/dozen/volumes/${leaseId}`;
}

// Logs in (node.startup manual: a board's reboot does not log in by itself, the controller decides; the
// node record, secrets included, is root's alone under /etc/iscsi), waits for the LUN, and mounts it.
// mkfs runs only when the controller says the volume was never formatted (FRESH=1, its record) AND the
// disk has no signature: blkid's "nothing found" is also what it says when it cannot read, so a
// volume that ever held a file system is never formatted, whatever blkid says. A mount point that
// holds something other than this LUN (a dead session's mount, left from before the lease moved away
// and back) is unmounted first. The mount point is immutable while nothing is mounted on it: a
// container started without its volume (the board rebooted) gets EPERM on /data, not the board's disk.
const ATTACH = `set -eu
umask 077
n() { iscsiadm -m node -T "$IQN" -p "$PORTAL" "$@"; }
n -o new >/dev/null
n -o update -n node.startup -v manual
n -o update -n node.session.auth.authmethod -v CHAP
n -o update -n node.session.auth.username -v "$CHAP_USER"
n -o update -n node.session.auth.password -v "$CHAP_SECRET"
n -o update -n node.session.auth.username_in -v "$TARGET_USER"
n -o update -n node.session.auth.password_in -v "$TARGET_SECRET"
n -l >/dev/null || [ $? -eq 15 ]
dev=/dev/disk/by-path/ip-$PORTAL-iscsi-$IQN-lun-1
i=0; while [ ! -b "$dev" ]; do i=$((i+1)); [ $i -le 150 ] || { echo "no $dev after login" >&2; exit 1; }; sleep 0.2; done
real=$(readlink -f "$dev")
if mountpoint -q "$MNT" && [ "$(findmnt -no SOURCE "$MNT")" != "$real" ]; then umount -l "$MNT"; fi
if ! mountpoint -q "$MNT"; then
  set +e; blkid -p "$real" >/dev/null 2>&1; rc=$?; set -e
  if [ $rc -eq 2 ] && [ "$FRESH" = 1 ]; then
    uid=$(awk -F: '$1=="dockremap"{print $2; exit}' /etc/subuid); gid=$(awk -F: '$1=="dockremap"{print $2; exit}' /etc/subgid)
    mkfs.ext4 -q -F -L dozen-data -E root_owner=\${uid:-0}:\${gid:-0} "$real"
    echo formatted
  elif [ $rc -eq 0 ]; then
    e2fsck -p "$real" >/dev/null 2>&1 || [ $? -le 2 ] || { echo "e2fsck -p found errors it cannot fix" >&2; exit 1; }
  else echo "the volume shows no file system (blkid $rc) though it was formatted before: not formatting it" >&2; exit 1; fi
  mkdir -p "$MNT"
  chattr +i "$MNT"
  mount -o noatime "$real" "$MNT"
  echo mounted-now
fi
echo mounted`;

// Everything written is on the controller before the session ends; a volume no longer mounted and a
// session already gone are fine (idempotent). The immutable mount point stays (a container started
// on it gets EPERM), unless the lease is over (REMOVE=1).
const DETACH = `set -eu
if mountpoint -q "$MNT"; then sync -f "$MNT"; umount "$MNT"; fi
if [ "$REMOVE" = 1 ] && [ -d "$MNT" ]; then chattr -i "$MNT"; rmdir "$MNT"; fi
iscsiadm -m node -T "$IQN" -p "$PORTAL" -u >/dev/null 2>&1 || [ $? -eq 21 ]
iscsiadm -m node -T "$IQN" -p "$PORTAL" -o delete >/dev/null 2>&1 || true
echo detached`;

// The lease lives elsewhere now (its target here is gone): whatever is left of it here goes, lazily
// (a dead session's mount cannot be flushed), and its node records with it.
const EVICT = `set -u
umount -l "$MNT" 2>/dev/null || true
for t in $(iscsiadm -m node 2>/dev/null | awk '{print $2}' | grep -F ".$LEASE" | sort -u); do
  case "$t" in *".$LEASE") iscsiadm -m node -T "$t" -u >/dev/null 2>&1; iscsiadm -m node -T "$t" -o delete >/dev/null 2>&1;; esac
done
echo evicted`;

export interface BoardVolumesOptions {
  store: Store;
  storage: IscsiBoardStorage;
  /** Images the driver imports into boards; the helper runs the one of the board's platform (it needs nsenter). */
  images: ContainerImageSource[];
  sizeBytes: number;
  log: Logger;
}

export class BoardVolumes implements LeaseVolumes {
  constructor(private readonly o: BoardVolumesOptions) {}

  accepts(host: ContainerHost, leaseId: string): boolean {
    // A lease that has a volume goes only where the volume can follow it.
    return !this.o.store.state.leases.find((l) => l.id === leaseId)?.volume || !!this.sharedBoard(host.id);
  }

  async attach(host: ContainerHost, leaseId: string): Promise<string | null> {
    const board = this.sharedBoard(host.id);
    const lease = this.lease(leaseId);
    if (!board) {
      if (lease.volume) throw new Error(`lease ${leaseId} has a /data volume, which ${host.id} (not a shared board) cannot reach`);
      return null; // a hand-configured engine: no controller storage reaches it
    }
    const rec = await this.o.storage.attachVolume(lease, board, this.o.sizeBytes);
    // Recorded before the board logs in: a restart re-exports it where it is now, never where it was.
    await this.record(leaseId, rec);
    const mnt = volumeMountPath(leaseId);
    const out = await this.helper(host, `attach the volume of lease ${leaseId}`, ATTACH, rec, mnt);
    if (!rec.formatted) await this.record(leaseId, { ...rec, formatted: true });
    this.o.log.info({ lease: leaseId, board: host.id, iqn: rec.iqn, formatted: out.includes('formatted') }, 'volume attached');
    return mnt;
  }

  async remount(host: ContainerHost, leaseId: string): Promise<boolean> {
    const rec = this.o.store.state.leases.find((l) => l.id === leaseId)?.volume;
    if (!rec || rec.boardId !== host.id) return false;
    const out = await this.helper(host, `remount the volume of lease ${leaseId}`, ATTACH, rec, volumeMountPath(leaseId));
    return out.includes('mounted-now');
  }

  async detach(host: ContainerHost, leaseId: string, opts: { remove?: boolean } = {}): Promise<void> {
    const rec = this.lease(leaseId).volume;
    if (!rec || rec.boardId !== host.id) return;
    await this.helper(host, `detach the volume of lease ${leaseId}`, DETACH, rec, volumeMountPath(leaseId), { REMOVE: opts.remove ? '1' : '0' });
  }

  async evict(host: ContainerHost, leaseId: string): Promise<void> {
    if (!this.sharedBoard(host.id)) return;
    if (this.o.store.state.leases.find((l) => l.id === leaseId)?.volume?.boardId === host.id) return; // it lives here
    await this.helper(host, `evict what is left of lease ${leaseId}'s volume`, EVICT, null, volumeMountPath(leaseId), { LEASE: leaseId });
  }

  async destroy(leaseId: string): Promise<void> {
    const lease = this.o.store.state.leases.find((l) => l.id === leaseId);
    if (lease) await this.o.storage.destroyVolume(lease);
  }

  private sharedBoard(id: string) {
    return this.o.store.state.boards.find((b) => b.id === id && b.role === 'shared');
  }

  private async record(leaseId: string, rec: VolumeRecord): Promise<void> {
    await this.o.store.update((s) => {
      const l = s.leases.find((x) => x.id === leaseId);
      if (l) l.volume = rec;
    });
  }

  private async helper(host: ContainerHost, what: string, script: string, rec: VolumeRecord | null, mnt: string, extra: Record<string, string> = {}): Promise<string> {
    const facts = await host.facts();
    const image = this.o.images.find((i) => facts.platforms.includes(i.platform));
    if (!image) throw new Error(`${what}: no helper image for ${facts.platforms.join(', ')} (build images/container-armhf)`);
    await ensureImage(host, image.ref, this.o.images);
    const env = {
      ...(rec
        ? {
            IQN: rec.iqn,
            PORTAL: rec.portal,
            CHAP_USER: rec.chapUser,
            CHAP_SECRET: rec.chapSecret,
            TARGET_USER: rec.targetUser ?? '',
            TARGET_SECRET: rec.targetSecret ?? '',
            FRESH: rec.formatted ? '0' : '1',
          }
        : {}),
      MNT: mnt,
      ...extra,
    };
    const r = await runOnBoard(host, image.ref, what, script, env);
    if (r.code !== 0) {
      this.o.log.error({ board: host.id, what, code: r.code, output: r.output.slice(-2000) }, 'volume helper failed');
      throw new Error(`${what} on shared board ${host.id} failed (exit ${r.code}; the server log has its output)`);
    }
    return r.output;
  }

  private lease(id: string): Lease {
    const l = this.o.store.state.leases.find((x) => x.id === id);
    if (!l) throw new Error(`lease ${id} is not recorded`);
    return l;
  }
}
