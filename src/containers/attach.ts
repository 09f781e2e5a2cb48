import { ContainerConsole } from './console.js';
import { usableHost, type DriverContext } from './context.js';

/** The container's TTY. `logs: true` first replays what it printed so far (Docker keeps ~2 MB). No lock. */
export async function attachConsole(ctx: DriverContext, leaseId: string, opts: { logs?: boolean }): Promise<ContainerConsole> {
  const lease = await ctx.index.locate(leaseId);
  const host = usableHost(ctx.pool, lease.hostId);
  const id = lease.containerId;
  const socket = await host.call(
    `attach to the console of lease ${leaseId}`,
    () =>
      host.streams
        .getContainer(id)
        .attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true, logs: Boolean(opts.logs) }),
    `container of lease ${leaseId} on ${host.id}`,
  );
  return new ContainerConsole(socket, async (cols, rows) => {
    await host.call(`resize the console of lease ${leaseId}`, (d) => d.getContainer(id).resize({ w: cols, h: rows }));
  });
}
