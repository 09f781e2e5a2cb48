import type Docker from 'dockerode';
import { HttpError, NotFoundError } from '../util/errors.js';
import type { ContainerHost } from './host.js';
import { tenantNetworkName } from './network.js';
import type { ContainerPool } from './pool.js';
import { LABEL, type ContainerLease, type ContainerLeaseSpec } from './types.js';

/**
 * Where each lease runs, as far as this process knows. Docker's labels are the record; this only
 * saves lookups, and is refilled from them (find) after a restart.
 */
export class LeaseIndex {
  private readonly leases = new Map<string, ContainerLease>();

  constructor(private readonly pool: ContainerPool) {}

  get(leaseId: string): ContainerLease | undefined {
    return this.leases.get(leaseId);
  }

  set(leaseId: string, lease: ContainerLease): void {
    this.leases.set(leaseId, lease);
  }

  delete(leaseId: string): void {
    this.leases.delete(leaseId);
  }

  values(): ContainerLease[] {
    return [...this.leases.values()];
  }

  async locate(leaseId: string): Promise<ContainerLease> {
    const lease = await this.find(leaseId);
    if (!lease) throw new NotFoundError(`container lease ${leaseId}`);
    return lease;
  }

  /** The index, else every usable board asked by label (after a restart, before reconcile). */
  async find(leaseId: string): Promise<ContainerLease | undefined> {
    const known = this.leases.get(leaseId);
    if (known) return known;
    const found = await Promise.all(
      this.pool
        .hosts()
        .filter((h) => this.pool.isUsable(h.id))
        .map(async (h) => {
          const list = await h
            .call('list containers', (d) => d.listContainers({ all: true, filters: { label: [`${LABEL.lease}=${leaseId}`] } }))
            .catch(() => []);
          return list[0] ? leaseFromInfo(h, list[0]) : undefined;
        }),
    );
    const lease = found.find(Boolean);
    if (lease) this.leases.set(leaseId, lease);
    return lease;
  }
}

/** The lease a container of ours stands for, read from its labels (`spec` when the record has it). */
export function leaseFromInfo(host: ContainerHost, c: Docker.ContainerInfo, spec?: ContainerLeaseSpec): ContainerLease {
  const labels = c.Labels;
  const s = spec ?? (JSON.parse(labels[LABEL.spec] ?? 'null') as ContainerLeaseSpec | null);
  if (!s) throw new HttpError(500, `container ${c.Id.slice(0, 12)} on ${host.id} has no ${LABEL.spec} label`);
  const port = Number(labels[LABEL.sshPort]);
  return {
    leaseId: labels[LABEL.lease]!,
    tenantId: labels[LABEL.tenant] ?? s.tenantId,
    hostId: host.id,
    containerId: c.Id,
    sshHost: host.sshHost,
    sshPort: port > 0 ? port : null,
    network: tenantNetworkName(labels[LABEL.tenant] ?? s.tenantId),
    spec: s,
  };
}
