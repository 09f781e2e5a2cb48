import { log as rootLog, type Logger } from '../log.js';
import { BadRequestError, ConflictError } from '../util/errors.js';
import { attachConsole } from './attach.js';
import type { ContainerConsole } from './console.js';
import { createContainer, removeContainer } from './container-create.js';
import { startContainer } from './container-start.js';
import { usableHost, type DriverContext } from './context.js';
import { execInLease, type ExecResult } from './exec.js';
import { ensureImage, type ContainerImageSource } from './images.js';
import type { ContainerHost } from './host.js';
import { inspectLease } from './inspect.js';
import { FenceChecks, type FenceTarget } from './fence.js';
import { NO_VOLUMES, type LeaseVolumes } from './volumes.js';
import { LeaseIndex } from './lease-index.js';
import { LeaseLocks } from './locks.js';
import { removeTenantNetworkIfUnused, type OutboundPolicy } from './network.js';
import { migrateLease, removeMovedImages, type Migration } from './migrate.js';
import { placeLease } from './place-lease.js';
import type { ContainerPool } from './pool.js';
import { powerContainer } from './power.js';
import { waitForConsoleMarker, waitForSshBanner } from './ready.js';
import { reconcileLeases } from './reconcile.js';
import {
  LABEL,
  containerLeaseSpecSchema,
  type ContainerLease,
  type ContainerLeaseSpec,
  type ContainerLeaseStatus,
  type ContainerPowerAction,
  type DiskQuotaPolicy,
  type ReconcileResult,
  type RecordedContainerLease,
} from './types.js';

export { containerName } from './container-body.js';
export type { ExecResult } from './exec.js';

export interface ContainerLeaseDriverOptions {
  pool: ContainerPool;
  /** Images the driver may import into a board that lacks them (no registry needed). */
  images?: ContainerImageSource[];
  /** Max processes+threads per container (cgroup pids). */
  pidsLimit?: number;
  /** Outbound traffic from tenant networks: `deny` = internal network (then no SSH port either). */
  outbound?: OutboundPolicy;
  /** Root filesystem quota when a spec gives none; null: ask for none. */
  diskMb?: number | null;
  /**
   * `require` (default): a lease that asks for a disk quota goes only to a board that enforces one, and
   * is refused when none can. `best-effort`: such a lease may land where no quota holds (inspect says so).
   */
  diskQuota?: DiskQuotaPolicy;
  /** Seconds `power off` waits for the container's init before SIGKILL. */
  stopTimeoutS?: number;
  /** Recreate a down board's leases elsewhere (failover.ts reads this). */
  failover?: boolean;
  /**
   * Boot-network addresses tenants' containers must not reach (the controller's metadata and iSCSI
   * ports): a board whose tenant bridges reach one gets no lease (fence.ts). Empty: not checked.
   */
  fenceTargets?: FenceTarget[];
  logger?: Logger;
}

/**
 * Container leases on the shared pool: the lease API's create / reimage / power / release / console,
 * with a Docker container (plus the tenant's bridge network) in place of a board.
 * Docker itself is the record of what runs where (labels on each container); the in-memory index
 * only saves lookups. The lease layer stores what create/reimage/recreate return.
 *
 * This class takes each operation's outer lock; the work is in one module per concern. Which locks
 * exist and the only order they may nest in: locks.ts.
 */
export class ContainerLeaseDriver {
  readonly pool: ContainerPool;
  readonly failover: boolean;
  readonly outbound: OutboundPolicy;
  private readonly ctx: DriverContext;

  constructor(opts: ContainerLeaseDriverOptions) {
    this.pool = opts.pool;
    this.outbound = opts.outbound ?? 'allow';
    this.failover = opts.failover ?? false;
    this.ctx = {
      pool: this.pool,
      images: opts.images ?? [],
      pidsLimit: opts.pidsLimit ?? 256,
      outbound: this.outbound,
      diskMb: opts.diskMb === undefined ? 2048 : opts.diskMb,
      diskQuota: opts.diskQuota ?? 'require',
      stopTimeoutS: opts.stopTimeoutS ?? 5,
      log: (opts.logger ?? rootLog).child({ component: 'containers' }),
      index: new LeaseIndex(this.pool),
      locks: new LeaseLocks(),
      fence: new FenceChecks(opts.images ?? [], opts.fenceTargets ?? []),
      volumes: NO_VOLUMES,
    };
  }

  /** Persistent /data from now on (the server sets it once storage and shared boards exist). */
  setVolumes(volumes: LeaseVolumes): void {
    this.ctx.volumes = volumes;
  }

  /** Places the lease on the board with the most free memory and starts it. 409 when nothing fits. */
  async create(input: ContainerLeaseSpec): Promise<ContainerLease> {
    const spec = parseSpec(input);
    const ctx = this.ctx;
    return ctx.locks.lease(spec.leaseId, async () => {
      const existing = await ctx.index.find(spec.leaseId);
      if (existing) throw new ConflictError(`container lease ${spec.leaseId} already exists on ${existing.hostId}`);
      return placeLease(ctx, spec, []);
    });
  }

  /** A fresh container from the lease's image on the same board: the tenant's changes are gone. */
  async reimage(leaseId: string): Promise<ContainerLease> {
    const ctx = this.ctx;
    return ctx.locks.lease(leaseId, async () => {
      const lease = await ctx.index.locate(leaseId);
      const host = usableHost(ctx.pool, lease.hostId);
      // Same board and port, no placement; the old container goes and the new one is created under one
      // `place`, since placement reads memory and ports from the containers on each board: a create in
      // between would otherwise see the memory and port free and take them, over-committing the board.
      const created = await ctx.locks.place(async () => {
        await removeContainer(host, lease);
        await removeMovedImages(host, leaseId); // a moved container's committed image: a reimage starts from the lease's own
        return createContainer(ctx, host, lease.spec, lease.sshPort);
      });
      return startContainer(ctx, host, created);
    });
  }

  async power(leaseId: string, action: ContainerPowerAction): Promise<void> {
    const ctx = this.ctx;
    await ctx.locks.lease(leaseId, async () => {
      const lease = await ctx.index.locate(leaseId);
      const host = usableHost(ctx.pool, lease.hostId);
      await powerContainer(host, leaseId, lease.containerId, action, ctx.stopTimeoutS);
    });
  }

  /**
   * Removes the container and, when the tenant has nothing else on that board, its network; then its
   * volume (unmounted first where the board answers; destroyed either way). Idempotent.
   */
  async release(leaseId: string): Promise<void> {
    const ctx = this.ctx;
    await ctx.locks.lease(leaseId, async () => {
      const lease = await ctx.index.find(leaseId);
      if (lease) {
        const host = ctx.pool.get(lease.hostId);
        await removeContainer(host, lease);
        ctx.index.delete(leaseId);
        await ctx.locks.net(host.id, lease.tenantId, () => removeTenantNetworkIfUnused(host, lease.tenantId));
        await removeMovedImages(host, leaseId);
        await ctx.volumes.detach(host, leaseId, { remove: true }).catch((err) => ctx.log.warn({ err: (err as Error).message, host: host.id, lease: leaseId }, 'volume not unmounted; destroying it anyway'));
      }
      await ctx.volumes.destroy(leaseId);
    });
  }

  async inspect(leaseId: string): Promise<ContainerLeaseStatus> {
    return inspectLease(this.ctx, leaseId);
  }

  /** The container's TTY. `logs: true` first replays what it printed so far (Docker keeps ~2 MB). */
  async attach(leaseId: string, opts: { logs?: boolean } = {}): Promise<ContainerConsole> {
    return attachConsole(this.ctx, leaseId, opts);
  }

  /**
   * Resolves when the lease is ready for its tenant: its SSH server greets through the published
   * port (what a tenant connects to), or — with outbound deny, where nothing is published — the
   * console has printed the image's ready marker. Rejects after timeoutMs saying what it waited for.
   */
  async waitReady(leaseId: string, opts: { timeoutMs?: number; marker?: string } = {}): Promise<string> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const lease = await this.ctx.index.locate(leaseId);
    const what = `lease ${leaseId} on ${lease.hostId}`;
    if (lease.sshPort !== null) return waitForSshBanner(what, lease.sshHost, lease.sshPort, timeoutMs);
    await waitForConsoleMarker(what, await this.attach(leaseId, { logs: true }), timeoutMs, opts.marker);
    return 'console ready';
  }

  /** Runs a command in the lease's container (operator checks, tests). */
  async exec(leaseId: string, argv: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return execInLease(this.ctx, leaseId, argv, opts);
  }

  /**
   * On start (and whenever wanted): containers labeled by us that no record claims are removed,
   * records whose container is gone are reported, tenant networks left empty are removed.
   * A record claims a container when lease, board and container id all match.
   */
  async reconcile(recorded: RecordedContainerLease[]): Promise<ReconcileResult> {
    return reconcileLeases(this.ctx, recorded);
  }

  /**
   * Creates the recorded lease anew on a usable board other than `exclude` (failover; or a lease
   * reconcile reported missing). The old container is removed when its board still answers.
   */
  async recreate(record: RecordedContainerLease, opts: { exclude?: string[] } = {}): Promise<ContainerLease> {
    const ctx = this.ctx;
    return ctx.locks.lease(record.leaseId, async () => {
      const spec = record.spec ?? ctx.index.get(record.leaseId)?.spec;
      if (!spec) throw new BadRequestError(`lease ${record.leaseId}: no spec recorded, cannot recreate it`);
      const exclude = opts.exclude ?? [];
      const oldHost = ctx.pool.has(record.hostId) ? ctx.pool.get(record.hostId) : null;
      const old = { containerId: record.containerId, leaseId: record.leaseId } as ContainerLease;
      const movingAway = !oldHost || exclude.includes(record.hostId) || !ctx.pool.isUsable(record.hostId);
      // Staying on the same board: the old container must go first (same name, same port).
      if (oldHost && !movingAway) await removeContainer(oldHost, old);
      const lease = await placeLease(ctx, spec, exclude);
      // Moving away: best effort, so that a board that comes back never runs a second copy (reconcile
      // removes it otherwise, since no record claims it any more).
      if (oldHost && movingAway) {
        const removal = removeContainer(oldHost, old).catch((err) =>
          ctx.log.warn({ err: (err as Error).message, host: oldHost.id, lease: record.leaseId }, 'old container left for reconcile'),
        );
        // Not waited for when the board fails its health checks: it would hold the move up for a whole call timeout.
        // One that answers also loses what is left of the volume there (its target is gone already).
        if (ctx.pool.state(oldHost.id).health !== 'down') {
          await removal;
          await ctx.volumes.evict(oldHost, record.leaseId).catch((err) => ctx.log.warn({ err: (err as Error).message, host: oldHost.id, lease: record.leaseId }, 'old volume mount left (evicted when the board comes back)'));
        }
      }
      return lease;
    });
  }

  /**
   * Moves a lease to another board keeping its changes and its /data (a drain; migrate.ts): the same
   * lease id, spec and keys, from the container's committed image. Rolls back to the old board on failure.
   */
  async migrate(record: RecordedContainerLease, opts: { exclude?: string[]; onPlaced?: (lease: ContainerLease) => Promise<void> } = {}): Promise<Migration> {
    const ctx = this.ctx;
    return ctx.locks.lease(record.leaseId, async () => {
      const spec = record.spec ?? ctx.index.get(record.leaseId)?.spec;
      if (!spec) throw new BadRequestError(`lease ${record.leaseId}: no spec recorded, cannot move it`);
      return migrateLease(ctx, record, spec, opts.exclude ?? [], opts.onPlaced);
    });
  }

  /**
   * Readies a board that just joined the pool for its first lease: the images of its platform imported
   * and its fence probed, so neither waits inside a tenant's create (or a drain's downtime). Best effort.
   */
  async warm(host: ContainerHost): Promise<void> {
    const ctx = this.ctx;
    const facts = await host.facts();
    for (const img of ctx.images.filter((i) => facts.platforms.includes(i.platform))) await ensureImage(host, img.ref, ctx.images);
    if (ctx.fence.enabled) await ctx.fence.of(host);
  }

  /**
   * A board back after its leases moved away (failover could not reach it to remove them) may still run
   * their old copies, restarted by the engine: those whose lease is recorded on another board go.
   * Containers of leases not recorded at all are left to the start-up reconcile (one may be being placed).
   */
  async removeMovedCopies(hostId: string, recorded: RecordedContainerLease[]): Promise<string[]> {
    const host = this.ctx.pool.get(hostId);
    const where = new Map(recorded.map((r) => [r.leaseId, r.hostId]));
    const removed: string[] = [];
    const moving = new Set(recorded.filter((r) => r.migrating).map((r) => r.leaseId));
    for (const c of await host.ours()) {
      const leaseId = c.Labels[LABEL.lease]!;
      const on = where.get(leaseId);
      if (on === undefined || on === hostId || moving.has(leaseId)) continue; // a lease being moved: its move decides
      await this.ctx.locks.lease(leaseId, async () => {
        await removeContainer(host, { leaseId, containerId: c.Id });
        await removeMovedImages(host, leaseId);
        await this.ctx.volumes.evict(host, leaseId);
      });
      removed.push(`removed the old copy of lease ${leaseId} on ${hostId} (it runs on ${on})`);
    }
    return removed;
  }

  /**
   * A board back after a reboot: the volumes of the leases recorded on it are mounted again, and a
   * container that runs (the engine restarted it, without its volume) is restarted so /data is its own.
   */
  async reattachVolumes(hostId: string, recorded: RecordedContainerLease[]): Promise<string[]> {
    const ctx = this.ctx;
    const host = ctx.pool.get(hostId);
    const lines: string[] = [];
    for (const r of recorded.filter((x) => x.hostId === hostId && !x.migrating)) {
      // One lease's trouble (its volume gone, a release under way) must not leave the others without theirs.
      await ctx.locks
        .lease(r.leaseId, async () => {
          if (!(await ctx.volumes.remount(host, r.leaseId))) return;
          const c = host.streams.getContainer(r.containerId);
          const st = (await host.call(`inspect the container of lease ${r.leaseId}`, () => c.inspect())).State;
          if (st.Running || st.Restarting) await host.call(`restart the container of lease ${r.leaseId}`, () => c.restart({ t: ctx.stopTimeoutS }));
          lines.push(`lease ${r.leaseId}: /data mounted again on ${hostId}${st.Running || st.Restarting ? ', container restarted' : ''}`);
        })
        .catch((err: unknown) => lines.push(`lease ${r.leaseId}: /data not mounted again on ${hostId}: ${(err as Error).message}`));
    }
    return lines;
  }

  /** Where a lease runs, as far as this process knows (create/reimage/reconcile fill it). */
  known(): ContainerLease[] {
    return this.ctx.index.values();
  }
}

function parseSpec(input: ContainerLeaseSpec): ContainerLeaseSpec {
  const r = containerLeaseSpecSchema.safeParse(input);
  if (!r.success) {
    const fields = r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new BadRequestError(`invalid container lease: ${fields.join('; ')}`, r.error.issues);
  }
  return r.data;
}
