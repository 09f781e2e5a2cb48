import { EventEmitter } from 'node:events';
import type { Connector, Transport, TransportEvents } from '../console/source.js';
import type { ContainerFailover, ContainerLeases } from '../leases/ports.js';
import type { ContainerRecord, Lease } from '../store/schema.js';
import { BadRequestError } from '../util/errors.js';
import type { ContainerLeaseDriver } from './driver.js';
import type { ContainerImageSource } from './images.js';
import type { FailoverResult } from './failover.js';
import type { ContainerLease, ContainerLeaseSpec, RecordedContainerLease } from './types.js';

/**
 * The lease layer's view of container leases (src/leases/ports.ts) over the Docker driver. Images are
 * named by their Docker reference or by a short alias: `dozen/armhf-base:<hash>` is `armhf-base`.
 */
export class ContainerLeasePort implements ContainerLeases {
  constructor(
    readonly driver: ContainerLeaseDriver,
    private readonly images: ContainerImageSource[],
  ) {}

  /** The Docker reference for an alias or a reference the driver can import; null if unknown. */
  resolveImage(name: string): string | null {
    const hit = this.images.find((i) => i.ref === name || aliasOf(i.ref) === name);
    return hit?.ref ?? null;
  }

  imageNames(): string[] {
    return this.images.map((i) => aliasOf(i.ref));
  }

  hasHosts(): boolean {
    return this.driver.pool.hosts().length > 0;
  }

  async create(lease: Lease, size: { memoryMb: number; cpus: number }): Promise<ContainerRecord> {
    const image = this.resolveImage(lease.image);
    if (!image) throw new BadRequestError(`image: unknown container image "${lease.image}" (known: ${this.imageNames().join(', ') || 'none built'})`);
    const spec: ContainerLeaseSpec = { leaseId: lease.id, tenantId: lease.tenantId, image, memoryMb: size.memoryMb, cpus: size.cpus, sshKeys: lease.sshKeys, hostname: lease.hostname };
    const c = await this.driver.create(spec);
    await this.driver.waitReady(lease.id);
    return containerRecordOf(c);
  }

  async reimage(lease: Lease): Promise<ContainerRecord> {
    const c = await this.driver.reimage(lease.id);
    await this.driver.waitReady(lease.id);
    return containerRecordOf(c);
  }

  power(lease: Lease, action: 'on' | 'off' | 'cycle'): Promise<void> {
    return this.driver.power(lease.id, action);
  }

  release(lease: Lease): Promise<void> {
    return this.driver.release(lease.id);
  }

  async reconcile(leases: Lease[]): Promise<string[]> {
    const r = await this.driver.reconcile(containerRecords(leases));
    return [
      ...r.orphansRemoved.map((x) => `removed orphan container ${x.containerId.slice(0, 12)} of lease ${x.leaseId} on ${x.hostId}`),
      ...r.missing.map((x) => `container of lease ${x.leaseId} is missing from ${x.hostId}`),
      ...r.networksRemoved.map((x) => `removed unused tenant network ${x.network} on ${x.hostId}`),
      ...r.unreachable.map((x) => `shared board ${x.hostId} unreachable: ${x.error}`),
    ];
  }

  /** The container's TTY as a console line: reattaches when the container restarts. */
  connector(leaseId: string): Connector {
    const driver = this.driver;
    return {
      target: `container:${leaseId}`,
      async connect(): Promise<Transport> {
        const con = await driver.attach(leaseId, { logs: false });
        const t = new EventEmitter<TransportEvents>() as Transport;
        let gone = false;
        const down = (err: Error) => {
          if (gone) return;
          gone = true;
          t.emit('disconnected', err);
        };
        con.on('data', (d: Buffer) => t.emit('data', d));
        con.on('end', () => down(new Error('container console closed')));
        con.on('close', () => down(new Error('container console closed')));
        con.on('error', (err: Error) => down(err));
        Object.assign(t, {
          write: (bytes: Uint8Array) => new Promise<void>((res, rej) => con.write(bytes, (err) => (err ? rej(err) : res()))),
          sendBreak: async () => {
            throw new Error('a container TTY has no BREAK');
          },
          close: async () => {
            gone = true;
            con.end();
          },
        });
        return t;
      },
    };
  }
}

function aliasOf(ref: string): string {
  return ref.replace(/^dozen\//, '').replace(/:[^/]*$/, '');
}

/** A driver's lease as the lease layer records it. */
export function containerRecordOf(c: ContainerLease): ContainerRecord {
  return { hostId: c.hostId, containerId: c.containerId, memoryMb: c.spec.memoryMb, cpus: c.spec.cpus, sshHost: c.sshHost, sshPort: c.sshPort ?? undefined, network: c.network, spec: c.spec };
}

/** What the lease layer recorded of its live container leases, as the driver's failover wants it. */
export function containerRecords(leases: Lease[]): RecordedContainerLease[] {
  return leases
    .filter((l) => l.kind === 'container' && l.container && l.state !== 'released')
    .map((l) => ({ leaseId: l.id, hostId: l.container!.hostId, containerId: l.container!.containerId, spec: l.container!.spec as ContainerLeaseSpec | undefined, ...(l.state === 'migrating' ? { migrating: true } : {}) }));
}

/**
 * Failover's result as the lease layer records it (LeaseService.recordFailover, the one writer of lease
 * state): each moved lease's new container record, and the leases that could not be moved.
 */
export function failoverOutcome(r: FailoverResult): ContainerFailover {
  return { moved: r.moved.map((m) => ({ leaseId: m.lease.leaseId, container: containerRecordOf(m.lease) })), failed: r.failed };
}
