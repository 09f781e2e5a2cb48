import type Docker from 'dockerode';
import { ConflictError } from '../util/errors.js';
import { containerBody } from './container-body.js';
import { requiresQuota, type DriverContext } from './context.js';
import { EngineError, QuotaUnenforceableError } from './errors.js';
import type { ContainerHost } from './host.js';
import { ensureImage } from './images.js';
import { ensureTenantNetwork } from './network.js';
import { tar } from './tar.js';
import { LABEL, type ContainerLease, type ContainerLeaseSpec, type DiskQuota } from './types.js';

/**
 * Creates (not starts) the container: image, tenant network, limits, labels, authorized_keys.
 * The caller holds `place` (the port and memory it claims were read under it); this takes
 * net:<host>:<tenant> inside, so the network cannot be removed before the container is on it.
 */
export async function createContainer(
  ctx: DriverContext,
  host: ContainerHost,
  spec: ContainerLeaseSpec,
  wantPort: number | null,
  image = spec.image,
  /** Its /data, when the caller attached it already (a move); undefined: attach it here. */
  attached?: string | null,
): Promise<ContainerLease> {
  const platform = await ensureImage(host, image, ctx.images);
  const facts = await host.facts();
  if (!facts.platforms.includes(platform)) {
    throw new ConflictError(`image ${image} is ${platform}, shared board ${host.id} runs ${facts.platforms.join(', ')}`);
  }
  // The volume first: on a move it is fenced from the old board and mounted here before the container exists.
  const data = attached !== undefined ? attached : await ctx.volumes.attach(host, spec.leaseId);
  return ctx.locks.net(host.id, spec.tenantId, async () => {
    const network = await ensureTenantNetwork(host, spec.tenantId, ctx.outbound);
    const sshPort = ctx.outbound === 'allow' ? (wantPort ?? (await freePort(host))) : null;
    const diskMb = spec.diskMb ?? ctx.diskMb;
    let container: Docker.Container;
    let disk: DiskQuota;
    const attempt = (quota: boolean, detail: string) => {
      disk = { quotaMb: diskMb, enforced: quota, detail };
      return host.call(`create the container of lease ${spec.leaseId}`, (d) =>
        d.createContainer(containerBody(host, spec, ctx, { network, sshPort, platform, disk, quota, data, image })),
      );
    };
    const required = requiresQuota(ctx, spec);
    if (diskMb === null) {
      container = await attempt(false, 'no quota asked');
    } else if (facts.quota.mode === 'no') {
      if (required) throw new QuotaUnenforceableError(host.id, facts.quota.detail);
      container = await attempt(false, facts.quota.detail);
    } else {
      try {
        container = await attempt(true, facts.quota.detail);
      } catch (err) {
        if (!(err instanceof EngineError) || !/storage-?opt|quota|size/i.test(err.message)) throw err;
        const reason = `${facts.storageDriver} on ${facts.backingFs ?? 'unknown fs'}: ${err.message.replace(/^.*could not [^:]*: /, '')}`;
        host.noteQuotaUnsupported(reason);
        if (required) throw new QuotaUnenforceableError(host.id, reason);
        ctx.log.warn({ host: host.id, reason }, 'disk quota unsupported on this board; creating without (policy best-effort)');
        container = await attempt(false, reason);
      }
    }
    const lease: ContainerLease = {
      leaseId: spec.leaseId,
      tenantId: spec.tenantId,
      hostId: host.id,
      containerId: container.id,
      sshHost: host.sshHost,
      sshPort,
      network,
      spec,
      ...(image !== spec.image ? { runImage: image } : {}),
      data,
    };
    try {
      await installKeys(host, lease);
    } catch (err) {
      await removeContainer(host, lease).catch(() => {});
      throw err;
    }
    return lease;
  });
}

/** The lowest port of the board's range that none of our containers holds. */
export async function freePort(host: ContainerHost, skip: Set<number> = new Set()): Promise<number> {
  const used = new Set((await host.ours()).map((c) => Number(c.Labels[LABEL.sshPort])).filter(Boolean));
  const [lo, hi] = host.config.sshPortRange;
  for (let p = lo; p <= hi; p++) if (!used.has(p) && !skip.has(p)) return p;
  throw new ConflictError(`shared board ${host.id} has no free SSH port in ${lo}-${hi}`);
}

/** Removes a lease's container; one already gone counts as removed. */
export async function removeContainer(host: ContainerHost, lease: Pick<ContainerLease, 'containerId' | 'leaseId'>): Promise<void> {
  try {
    await host.call(`remove the container of lease ${lease.leaseId}`, (d) =>
      d.getContainer(lease.containerId).remove({ force: true, v: true }),
    );
  } catch (err) {
    if ((err as { status?: number }).status === 502 && /no such container/i.test((err as Error).message)) return;
    throw err;
  }
}

async function installKeys(host: ContainerHost, lease: ContainerLease): Promise<void> {
  const keys = lease.spec.sshKeys.map((k) => k.trim()).join('\n');
  const archive = tar([
    { path: 'root', mode: 0o700 },
    { path: 'root/.ssh', mode: 0o700 },
    { path: 'root/.ssh/authorized_keys', mode: 0o600, content: keys ? keys + '\n' : '' },
  ]);
  await host.call(`write authorized_keys for lease ${lease.leaseId}`, (d) =>
    d.getContainer(lease.containerId).putArchive(archive, { path: '/' }),
  );
}
