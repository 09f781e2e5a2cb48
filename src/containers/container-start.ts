import { createContainer, freePort, removeContainer } from './container-create.js';
import type { DriverContext } from './context.js';
import type { ContainerHost } from './host.js';
import type { ContainerLease } from './types.js';

/**
 * Starts a created container; a port someone else took meanwhile gets the next free one (bounded).
 * The retry creates under `place`, so the caller must not hold `place` (it would deadlock).
 */
export async function startContainer(ctx: DriverContext, host: ContainerHost, lease: ContainerLease): Promise<ContainerLease> {
  const tried = new Set<number>();
  let current = lease;
  for (let attempt = 0; ; attempt++) {
    try {
      await host.call(`start container lease ${lease.leaseId}`, (d) => d.getContainer(current.containerId).start());
      ctx.index.set(current.leaseId, current);
      ctx.log.info({ lease: current.leaseId, host: host.id, container: current.containerId, sshPort: current.sshPort }, 'container lease started');
      return current;
    } catch (err) {
      const portTaken = /port is already allocated|address already in use/i.test((err as Error).message);
      await removeContainer(host, current).catch(() => {});
      if (!portTaken || current.sshPort === null || attempt >= 4) throw err;
      tried.add(current.sshPort);
      const port = await freePort(host, tried);
      const prev = current;
      current = await ctx.locks.place(() => createContainer(ctx, host, prev.spec, port, prev.runImage, prev.data));
    }
  }
}
