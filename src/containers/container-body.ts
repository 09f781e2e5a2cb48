import type Docker from 'dockerode';
import type { DriverContext } from './context.js';
import type { ContainerHost } from './host.js';
import { LABEL, type ContainerLeaseSpec, type DiskQuota } from './types.js';
import { DATA_PATH } from './volumes.js';

export const MiB = 1024 * 1024;
const SSH = '22/tcp';

/** What sshd and a login shell need inside a container lease (everything else is dropped). */
const SSH_CAPABILITIES = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'SETUID', 'SETGID', 'SYS_CHROOT', 'NET_BIND_SERVICE', 'KILL', 'AUDIT_WRITE'];

export function containerName(leaseId: string): string {
  return `dozen-${leaseId}`;
}

/** Docker's create body for a lease: TTY, labels (the record of the lease), limits, capabilities, port. */
export function containerBody(
  host: ContainerHost,
  spec: ContainerLeaseSpec,
  settings: Pick<DriverContext, 'outbound' | 'stopTimeoutS' | 'pidsLimit'>,
  o: { network: string; sshPort: number | null; platform: string; disk: DiskQuota; quota: boolean; data?: string | null; image?: string },
): Docker.ContainerCreateOptions {
  const bytes = spec.memoryMb * MiB;
  return {
    name: containerName(spec.leaseId),
    // The lease's image, or the committed image of a container moved here (migrate.ts); the spec keeps the lease's own.
    Image: o.image ?? spec.image,
    Hostname: spec.hostname,
    // The console is the container's TTY, like a board's serial line.
    Tty: true,
    OpenStdin: true,
    StdinOnce: false,
    Labels: {
      [LABEL.lease]: spec.leaseId,
      [LABEL.tenant]: spec.tenantId,
      [LABEL.host]: host.id,
      [LABEL.memoryMb]: String(spec.memoryMb),
      [LABEL.spec]: JSON.stringify(spec),
      [LABEL.disk]: JSON.stringify(o.disk),
      [LABEL.platform]: o.platform,
      [LABEL.outbound]: settings.outbound,
      ...(o.sshPort ? { [LABEL.sshPort]: String(o.sshPort) } : {}),
      ...(o.data ? { [LABEL.data]: o.data } : {}),
    },
    ExposedPorts: { [SSH]: {} },
    StopTimeout: settings.stopTimeoutS,
    HostConfig: {
      Memory: bytes,
      // Memory + swap = memory: no swap on top of the limit.
      MemorySwap: bytes,
      NanoCpus: Math.round(spec.cpus * 1e9),
      PidsLimit: settings.pidsLimit,
      ...(o.quota && o.disk.quotaMb ? { StorageOpt: { size: `${o.disk.quotaMb}M` } } : {}),
      NetworkMode: o.network,
      // The lease's persistent volume, mounted on the board by the controller (volumes.ts).
      ...(o.data ? { Binds: [`${o.data}:${DATA_PATH}:rw`] } : {}),
      PortBindings: o.sshPort ? { [SSH]: [{ HostIp: host.config.publishIp, HostPort: String(o.sshPort) }] } : {},
      // Root in the container, not on the board: every capability dropped but what an SSH login needs
      // (no NET_RAW: no crafted packets with another tenant's address; no MKNOD, SETFCAP, SETPCAP),
      // and no gaining privileges through setuid binaries.
      CapDrop: ['ALL'],
      CapAdd: SSH_CAPABILITIES,
      SecurityOpt: ['no-new-privileges:true'],
      // The image's init keeps its run state (a fifo) here: in memory, so a tenant who fills its
      // disk quota cannot stop its own container from starting again.
      Tmpfs: { '/run': 'rw,nosuid,nodev,noexec,size=1m,mode=755' },
      // A lease that was on stays on across engine restarts; one powered off stays off.
      RestartPolicy: { Name: 'unless-stopped' },
      // The console log Docker keeps: bounded.
      LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '2' } },
    },
  };
}
