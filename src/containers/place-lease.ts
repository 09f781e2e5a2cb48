import { HostUnavailableError, QuotaUnenforceableError } from './errors.js';
import { createContainer } from './container-create.js';
import { startContainer } from './container-start.js';
import { requiresQuota, type DriverContext } from './context.js';
import type { ContainerHost } from './host.js';
import { choosePlacement, type PlacementCandidate } from './placement.js';
import type { ContainerLease, ContainerLeaseSpec } from './types.js';

/**
 * Placement and container creation under one lock (`place`), so concurrent creates see each other's
 * memory; the container is started once the lock is released. The caller holds the lease's lock.
 */
export async function placeLease(
  ctx: DriverContext,
  spec: ContainerLeaseSpec,
  exclude: string[],
  opts: { platform?: string; prepare?: (host: ContainerHost) => Promise<{ image: string; data: string | null }> } = {},
): Promise<ContainerLease> {
  const created = await ctx.locks.place(async () => {
    const platform = opts.platform ?? ctx.images.find((s) => s.ref === spec.image)?.platform ?? null;
    const quota = requiresQuota(ctx, spec);
    // A board whose quota support was only `try` and failed is marked `no`: placement runs again
    // without it, at most once per board.
    for (let round = 0; ; round++) {
      const candidates = await Promise.all(ctx.pool.hosts().map((h) => candidate(ctx, h, spec, exclude, quota)));
      const hostId = choosePlacement(candidates, { memoryMb: spec.memoryMb, cpus: spec.cpus, platform });
      const host = ctx.pool.get(hostId);
      try {
        // A moved container (migrate.ts): its own image and its /data are put on the chosen board first.
        const ready = opts.prepare ? await opts.prepare(host) : undefined;
        return { host, lease: await createContainer(ctx, host, spec, null, ready?.image, ready ? ready.data : undefined) };
      } catch (err) {
        if (!(err instanceof QuotaUnenforceableError) || round >= ctx.pool.hosts().length) throw err;
      }
    }
  });
  return startContainer(ctx, created.host, created.lease);
}

async function candidate(ctx: DriverContext, host: ContainerHost, spec: ContainerLeaseSpec, exclude: string[], quota: boolean): Promise<PlacementCandidate> {
  const pool = ctx.pool;
  const none = { id: host.id, freeMb: 0, cpus: 0, platforms: [] };
  if (exclude.includes(host.id)) return { ...none, unavailable: 'is being left', unavailableKind: 'leaving' };
  if (pool.isDraining(host.id)) return { ...none, unavailable: 'is being drained', unavailableKind: 'leaving' };
  if (!ctx.volumes.accepts(host, spec.leaseId)) return { ...none, unavailable: "cannot reach the lease's /data volume (not a shared board)", unavailableKind: 'leaving' };
  const down = pool.downReason(host.id);
  if (down) return { ...none, unavailable: down, unavailableKind: 'down' };
  try {
    // One after the other: a dead board then costs one failed call (pool health counts calls).
    const facts = await host.facts();
    if (quota && facts.quota.mode === 'no') return { ...none, unavailable: `cannot enforce a disk quota (${facts.quota.detail})`, unavailableKind: 'quota' };
    if (ctx.fence.enabled) {
      const f = await ctx.fence.of(host);
      if (f.error) return { ...none, unavailable: `is not fenced from the boot network (its probe failed: ${f.error})`, unavailableKind: 'unfenced' };
      if (!f.fenced) return { ...none, unavailable: `is not fenced from the boot network (a tenant's bridge reaches ${f.reached.join(', ')})`, unavailableKind: 'unfenced' };
    }
    const freeMb = await host.freeMemoryMb();
    return { id: host.id, unavailable: null, freeMb, cpus: facts.cpus, platforms: facts.platforms };
  } catch (err) {
    const why = err instanceof HostUnavailableError ? `is unreachable (${err.reason})` : `failed (${(err as Error).message})`;
    return { ...none, unavailable: why, unavailableKind: 'down' };
  }
}
