import { KeyedMutex } from './mutex.js';

/**
 * The container lease driver's locks: one KeyedMutex per driver, a key held while its fn runs.
 * Every key is taken through this class, so this comment is the whole list.
 *
 *   lease:<leaseId>           One lease's create / reimage / power / release / recreate: one change
 *                             to a lease at a time (they share its container name and SSH port).
 *   place                     Pool-wide. Placement's reads (free memory, quota support, SSH ports in
 *                             use) and the container create that claims them, so concurrent creates
 *                             see each other; reimage (its remove and create) and start's port retry create under it too.
 *                             reconcile holds it per board, so its listing never interleaves with a create.
 *   net:<hostId>:<tenantId>   One tenant's bridge on one board: ensuring it and creating a container
 *                             on it vs removing it when no container of the tenant is left.
 *
 * Order, outer to inner (a level may be skipped, never reversed):
 *
 *   lease:<id>  →  place  →  net:<host>:<tenant>
 *
 *   create, recreate   lease → place → net                 (place-lease.ts → container-create.ts)
 *   reimage            lease → place → net                 (driver.ts → container-create.ts)
 *   start port retry   lease → place → net                 (container-start.ts, after place was released)
 *   release            lease → net                         (driver.ts)
 *   power              lease                               (driver.ts)
 *   reconcile          place → net, per board              (reconcile.ts; takes no lease lock)
 *   inspect, attach, waitReady, exec, known: no lock (they only read).
 *
 * Never nested: two lease keys, two net keys (reconcile takes its nets one after the other), nor
 * `place` inside `place`. KeyedMutex is not reentrant, so any of these would deadlock; that is why
 * a container is started (start may take `place` to retry a port) only once `place` is released.
 * Nothing is awaited under net:<…> that takes a lock.
 */
export class LeaseLocks {
  private readonly mutex = new KeyedMutex();

  /** Outermost: nothing else may be held when it is taken. */
  lease<T>(leaseId: string, fn: () => Promise<T>): Promise<T> {
    return this.mutex.run(`lease:${leaseId}`, fn);
  }

  /** Under a lease lock or none (reconcile); never under net:<…> or `place` itself. */
  place<T>(fn: () => Promise<T>): Promise<T> {
    return this.mutex.run('place', fn);
  }

  /** Innermost: fn takes no lock. */
  net<T>(hostId: string, tenantId: string, fn: () => Promise<T>): Promise<T> {
    return this.mutex.run(`net:${hostId}:${tenantId}`, fn);
  }
}
