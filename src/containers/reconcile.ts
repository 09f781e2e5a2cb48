import type Docker from 'dockerode';
import type { DriverContext } from './context.js';
import { leaseFromInfo } from './lease-index.js';
import { removeTenantNetworkIfUnused, tenantNetworks } from './network.js';
import { LABEL, type ReconcileResult, type RecordedContainerLease } from './types.js';

/**
 * Docker against the lease layer's records, board by board under `place` (then each tenant's net
 * lock, one at a time): unclaimed containers of ours are removed, records without a container are
 * reported, empty tenant networks are removed. Takes no lease lock (see locks.ts).
 */
export async function reconcileLeases(ctx: DriverContext, recorded: RecordedContainerLease[]): Promise<ReconcileResult> {
  const result: ReconcileResult = { orphansRemoved: [], missing: [], networksRemoved: [], unreachable: [] };
  for (const r of recorded) if (!ctx.pool.has(r.hostId)) result.missing.push(r);
  for (const host of ctx.pool.hosts()) {
    await ctx.locks.place(async () => {
      let list: Docker.ContainerInfo[];
      try {
        list = await host.ours();
      } catch (err) {
        result.unreachable.push({ hostId: host.id, error: (err as Error).message });
        return;
      }
      const mine = recorded.filter((r) => r.hostId === host.id);
      const claimed = new Set<string>();
      for (const c of list) {
        const leaseId = c.Labels[LABEL.lease]!;
        const rec = mine.find((r) => r.leaseId === leaseId && sameId(r.containerId, c.Id));
        if (rec) {
          claimed.add(c.Id);
          ctx.index.set(leaseId, leaseFromInfo(host, c, rec.spec));
          continue;
        }
        await host.call(`remove orphan container ${c.Id.slice(0, 12)}`, (d) => d.getContainer(c.Id).remove({ force: true, v: true }));
        if (ctx.index.get(leaseId)?.containerId === c.Id) ctx.index.delete(leaseId);
        result.orphansRemoved.push({ hostId: host.id, containerId: c.Id, leaseId });
        ctx.log.warn({ host: host.id, container: c.Id, lease: leaseId }, 'removed an orphaned container');
      }
      for (const r of mine) if (![...claimed].some((id) => sameId(r.containerId, id))) result.missing.push(r);
      for (const n of await tenantNetworks(host)) {
        if (await ctx.locks.net(host.id, n.tenantId, () => removeTenantNetworkIfUnused(host, n.tenantId))) {
          result.networksRemoved.push({ hostId: host.id, network: n.name });
        }
      }
    });
  }
  return result;
}

/** Docker ids match when one is a prefix of the other (records may hold the short id). */
function sameId(a: string, b: string): boolean {
  return a.length > 0 && b.length > 0 && (a.startsWith(b) || b.startsWith(a));
}
