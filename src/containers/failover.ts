import { log } from '../log.js';
import type { ContainerLeaseDriver } from './driver.js';
import type { HostState } from './pool.js';
import type { ContainerLease, RecordedContainerLease } from './types.js';

export interface FailoverResult {
  moved: Array<{ from: string; lease: ContainerLease }>;
  failed: Array<{ leaseId: string; from: string; error: string }>;
  /** Set when nothing was tried, and why ("failover is off"). */
  skipped?: string;
}

/**
 * Recreates, on other boards, the recorded leases whose board is down (marked by an operator or
 * failing health checks) — or, with `from`, those on the given boards. Returns the new placements;
 * the lease layer must store each `lease` in place of the old record. Sequential on purpose:
 * placement sees each moved lease's memory before placing the next.
 */
export async function failoverLeases(
  driver: ContainerLeaseDriver,
  recorded: RecordedContainerLease[],
  opts: { from?: string[] } = {},
): Promise<FailoverResult> {
  const result: FailoverResult = { moved: [], failed: [] };
  if (!driver.failover) return { ...result, skipped: 'failover is off (containers.failover: false)' };
  const pool = driver.pool;
  const from = new Set(opts.from ?? pool.hosts().map((h) => h.id).filter((id) => !pool.isUsable(id)));
  for (const rec of recorded) {
    if (!from.has(rec.hostId)) continue;
    try {
      const lease = await driver.recreate(rec, { exclude: [...from] });
      result.moved.push({ from: rec.hostId, lease });
    } catch (err) {
      result.failed.push({ leaseId: rec.leaseId, from: rec.hostId, error: (err as Error).message });
    }
  }
  return result;
}

/**
 * Runs failover whenever a board goes down. `records` gives the lease layer's current records;
 * `onResult` must persist the moved leases. Returns a function that stops watching.
 */
export function watchFailover(
  driver: ContainerLeaseDriver,
  hooks: {
    records: () => RecordedContainerLease[] | Promise<RecordedContainerLease[]>;
    /**
     * Before anything moves: the lease layer marks the leases it lets move `migrating` and returns their
     * ids; only those move (a lease released meanwhile must not come back on another board).
     */
    onStart?: (recorded: RecordedContainerLease[], down: HostState) => string[] | Promise<string[]>;
    onResult: (result: FailoverResult, down: HostState) => void | Promise<void>;
  },
): () => void {
  const onDown = (state: HostState) => {
    if (!driver.failover) return;
    void (async () => {
      let recorded: RecordedContainerLease[] = [];
      try {
        recorded = (await hooks.records()).filter((r) => r.hostId === state.id);
        if (!recorded.length) return;
        if (hooks.onStart) {
          const movable = new Set(await hooks.onStart(recorded, state));
          recorded = recorded.filter((r) => movable.has(r.leaseId));
          if (!recorded.length) return;
        }
        // Each lease recorded as soon as it has moved: a crash mid-batch loses no finished move.
        for (const rec of recorded) {
          const result = await failoverLeases(driver, [rec], { from: [state.id] });
          await hooks.onResult(result, state);
          recorded = recorded.filter((r) => r !== rec);
        }
      } catch (err) {
        log.error({ err, host: state.id }, 'container failover failed');
        // Leases marked migrating must not stay so: report each as not moved.
        const failed = recorded.map((r) => ({ leaseId: r.leaseId, from: state.id, error: `failover failed: ${(err as Error).message}` }));
        if (failed.length) await Promise.resolve(hooks.onResult({ moved: [], failed }, state)).catch((e: unknown) => log.error({ err: e, host: state.id }, 'container failover bookkeeping failed'));
      }
    })();
  };
  // A board that comes back may still run copies of what moved away while it was gone, and has lost the
  // mounts of the volumes of what stayed (after a reboot).
  const onUp = (state: HostState) => {
    void (async () => {
      const records = await hooks.records();
      const lines = [...(await driver.removeMovedCopies(state.id, records)), ...(await driver.reattachVolumes(state.id, records))];
      for (const line of lines) log.warn(`failover: ${line}`);
    })().catch((err: unknown) => log.warn({ err, host: state.id }, 'failover: could not check a returning board for old copies'));
  };
  driver.pool.on('down', onDown);
  driver.pool.on('up', onUp);
  return () => {
    driver.pool.off('down', onDown);
    driver.pool.off('up', onUp);
  };
}
