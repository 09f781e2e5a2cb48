import { ConflictError } from '../util/errors.js';
import type { ContainerHost } from './host.js';
import { LABEL } from './types.js';

export type OutboundPolicy = 'allow' | 'deny';

/** `dozen-t-<tenant>`: one bridge per tenant and board. */
export function tenantNetworkName(tenantId: string): string {
  return `dozen-t-${tenantId}`;
}

/**
 * The tenant's bridge on this board, created on first use. Inside it containers talk freely
 * (enable_icc); between tenants' bridges Docker's DOCKER-ISOLATION rules drop everything.
 * `deny` makes it `internal`: no route out, and (Docker's rule) no published ports either.
 */
export async function ensureTenantNetwork(host: ContainerHost, tenantId: string, outbound: OutboundPolicy): Promise<string> {
  const name = tenantNetworkName(tenantId);
  const existing = await findNetwork(host, name);
  if (existing) {
    const policy: OutboundPolicy = existing.Internal ? 'deny' : 'allow';
    if (policy !== outbound) {
      throw new ConflictError(`tenant ${tenantId}'s network on ${host.id} has outbound ${policy}, this lease asks for ${outbound}`);
    }
    return name;
  }
  try {
    await host.call(`create network ${name}`, (d) =>
      d.createNetwork({
        Name: name,
        Driver: 'bridge',
        CheckDuplicate: true,
        Internal: outbound === 'deny',
        Options: { 'com.docker.network.bridge.enable_icc': 'true' },
        Labels: { [LABEL.tenant]: tenantId, [LABEL.outbound]: outbound },
      }),
    );
  } catch (err) {
    // Lost a race with another creator (another control plane process): theirs is as good as ours.
    if (!(await findNetwork(host, name))) throw err;
  }
  return name;
}

async function findNetwork(host: ContainerHost, name: string) {
  const list = await host.call('list networks', (d) => d.listNetworks({ filters: { name: [name] } }));
  // The name filter matches substrings.
  return list.find((n) => n.Name === name);
}

/** Removes the tenant's network when none of our containers on this board belongs to the tenant any more. */
export async function removeTenantNetworkIfUnused(host: ContainerHost, tenantId: string): Promise<boolean> {
  const left = (await host.ours()).filter((c) => c.Labels[LABEL.tenant] === tenantId);
  if (left.length) return false;
  const name = tenantNetworkName(tenantId);
  if (!(await findNetwork(host, name))) return false;
  try {
    await host.call(`remove network ${name}`, (d) => d.getNetwork(name).remove());
    return true;
  } catch (err) {
    // Someone attached a container meanwhile (e.g. a concurrent create): keep it.
    if ((err as { status?: number }).status === 502) return false;
    throw err;
  }
}

/** Our tenant networks on this board (label dozen.tenant). */
export async function tenantNetworks(host: ContainerHost): Promise<Array<{ name: string; tenantId: string }>> {
  const list = await host.call('list networks', (d) => d.listNetworks({ filters: { label: [LABEL.tenant] } }));
  return list.map((n) => ({ name: n.Name, tenantId: n.Labels?.[LABEL.tenant] ?? '' }));
}
