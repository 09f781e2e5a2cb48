import type { ContainerHost } from './host.js';
import type { ContainerPowerAction } from './types.js';

/** Power on / off / cycle as start / stop / restart; the caller holds the lease's lock. */
export async function powerContainer(
  host: ContainerHost,
  leaseId: string,
  containerId: string,
  action: ContainerPowerAction,
  stopTimeoutS: number,
): Promise<void> {
  const t = stopTimeoutS;
  const what = { on: 'start', off: 'stop', cycle: 'restart' }[action];
  await host.call(
    `${what} container lease ${leaseId}`,
    async (d) => {
      const c = d.getContainer(containerId);
      try {
        if (action === 'on') await c.start();
        else if (action === 'off') await c.stop({ t });
        else await c.restart({ t });
      } catch (err) {
        // 304: already in the asked state.
        if ((err as { statusCode?: number }).statusCode !== 304) throw err;
      }
    },
    `container of lease ${leaseId} on ${host.id}`,
    // stop / restart answer only after up to t s of waiting for the container: an idle timeout past that.
    host.client((t + 30) * 1000),
  );
}
