import { MiB } from './container-body.js';
import type { DriverContext } from './context.js';
import type { ContainerHost } from './host.js';
import { LABEL, type ContainerLeaseStatus, type DiskQuota } from './types.js';

/** A lease's status as Docker reports it: state, OOM kills, limits and disk quota as created. No lock. */
export async function inspectLease(ctx: DriverContext, leaseId: string): Promise<ContainerLeaseStatus> {
  const lease = await ctx.index.locate(leaseId);
  const host = ctx.pool.get(lease.hostId);
  const c = await host.call(
    `inspect container lease ${leaseId}`,
    (d) => d.getContainer(lease.containerId).inspect(),
    `container of lease ${leaseId} on ${host.id}`,
  );
  const labels = c.Config.Labels ?? {};
  const net = c.NetworkSettings.Networks?.[lease.network];
  const startedAt = validTime(c.State.StartedAt);
  const oomEvents = startedAt ? await oomEventsSince(host, c.Id, startedAt) : 0;
  const hc = c.HostConfig;
  return {
    leaseId,
    tenantId: lease.tenantId,
    hostId: host.id,
    containerId: c.Id,
    image: c.Config.Image,
    platform: labels[LABEL.platform] ?? null,
    state: c.State.Status,
    power: c.State.Running ? 'on' : 'off',
    startedAt,
    finishedAt: validTime(c.State.FinishedAt),
    exitCode: c.State.Running ? null : c.State.ExitCode,
    oomKilled: c.State.OOMKilled || oomEvents > 0,
    oomEvents,
    restartCount: c.RestartCount,
    sshHost: lease.sshHost,
    sshPort: lease.sshPort,
    network: lease.network,
    ip: net?.IPAddress || null,
    outbound: labels[LABEL.outbound] === 'deny' ? 'deny' : 'allow',
    limits: {
      memoryMb: (hc.Memory ?? 0) / MiB,
      memorySwapMb: hc.MemorySwap && hc.MemorySwap > 0 ? hc.MemorySwap / MiB : null,
      cpus: (hc.NanoCpus ?? 0) / 1e9,
      pidsLimit: hc.PidsLimit && hc.PidsLimit > 0 ? hc.PidsLimit : null,
    },
    disk: parseDisk(labels[LABEL.disk]),
    // Never `--userns=host` from us (container-body.ts): in a user namespace wherever the engine has one.
    userns: hc.UsernsMode !== 'host' && (await host.facts()).userns,
  };
}

/** Docker's `oom` events for the container since `since` (ISO time); the engine keeps the last 256 events. */
async function oomEventsSince(host: ContainerHost, containerId: string, since: string): Promise<number> {
  const from = Math.floor(Date.parse(since) / 1000);
  const until = Math.max(from, Math.ceil(Date.now() / 1000));
  return host.call('read oom events', async (d) => {
    const stream = await d.getEvents({ since: from, until, filters: { container: [containerId], event: ['oom'] } });
    let text = '';
    for await (const chunk of stream) text += chunk.toString();
    return text.split('\n').filter((l) => l.includes('"oom"')).length;
  });
}

/** Docker's zero time (never started / never finished) is null. */
function validTime(t: string | undefined): string | null {
  return t && !t.startsWith('0001-') ? t : null;
}

function parseDisk(label: string | undefined): DiskQuota {
  try {
    return JSON.parse(label ?? '') as DiskQuota;
  } catch {
    return { quotaMb: null, enforced: false, detail: 'unknown (container not created by this version)' };
  }
}
