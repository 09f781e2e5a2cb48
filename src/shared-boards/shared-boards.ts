/**
 * Shared boards (issue #15): boards from the whole-board pool that the controller takes for itself to run
 * tenants' containers. Making one is a lease like any other (LeaseService.holdForEngine: the board boots
 * the engine image from the catalog on a CoW iSCSI root, with a second, blank LUN for Docker's data-root);
 * once its job is done and the engine answers /_ping over TLS with the controller's client certificate,
 * the engine joins the container pool, and the key the board fetched is no longer handed out. Giving the
 * board back releases that lease; it is refused while containers run there.
 */
import type { EngineCa } from '../engine-ca/index.js';
import { containerHost } from '../containers/hosts.js';
import type { ContainerHost, ContainerHostConfig } from '../containers/host.js';
import type { ContainerPool } from '../containers/pool.js';
import type { BoardEvents } from '../inventory/events.js';
import type { Bus, BusEvent } from '../leases/bus.js';
import type { Logger } from '../log.js';
import { publicLease } from '../leases/service.js';
import { SYSTEM_TENANT, type Board, type Job, type Lease } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { ConflictError, NotFoundError } from '../util/errors.js';
import type { BootEngineTls } from './engine-tls.js';

/** Docker's TLS port, where the docker-host image's dockerd listens (images/docker-host/rootfs/etc/docker/daemon.json). */
export const ENGINE_PORT = 2376;

export interface EngineLeases {
  holdForEngine(boardId: string, image: string, by?: 'operator' | 'policy'): Promise<{ lease: Lease; job: Job }>;
  release(p: 'system', id: string, reason?: string): Promise<{ lease: Lease; job: Job }>;
}

export interface SharedBoardsOptions {
  store: Store;
  /** The lease service (late-bound: it is made after the pool this service fills at start). */
  leases: () => EngineLeases;
  pool: ContainerPool;
  /** Opens the controller's engine CA (made on first use). */
  ca: () => Promise<EngineCa>;
  tls: BootEngineTls;
  bus: Bus;
  events: BoardEvents;
  log: Logger;
  /** The catalog image shared boards boot (images/docker-host). */
  image: string;
  /** How long an engine has to answer /_ping after its lease is active. */
  readyTimeoutMs: number;
  /** Between two pings while waiting. */
  pingIntervalMs?: number;
  /** Run once an engine has joined the pool (the driver imports images and probes the fence ahead of the first lease). */
  warm?: (host: ContainerHost) => Promise<void>;
  /** Fields every registered engine gets (SSH port range, reserve, call timeout). */
  hostDefaults?: Partial<ContainerHostConfig>;
}

/** What `dozen boards ls` and the UI show of a shared board. */
export interface SharedBoardStatus {
  engineLease?: string;
  /** waiting: the lease runs but the engine has not answered yet; ready: in the pool; down: in the pool but failing health checks or drained; failed: it never answered. */
  engine: 'provisioning' | 'waiting' | 'ready' | 'down' | 'failed' | 'none';
  reason?: string;
}

export class SharedBoards {
  /** Engines being waited for, by board: the lease and boot they wait for. */
  private readonly waiting = new Map<string, { leaseId: string; bootToken?: string; stop: AbortController }>();
  private readonly failed = new Map<string, string>();
  private unsubscribe?: () => void;

  constructor(private readonly o: SharedBoardsOptions) {}

  /**
   * A restarted server: engines of active engine leases were registered before, so they go back in the
   * pool at once, before container leases are reconciled against it (health checks then tell whether
   * they answer), and their boots' keys stay spent.
   */
  async restore(): Promise<string[]> {
    const lines: string[] = [];
    for (const l of this.o.store.state.leases) {
      if (!isEngineLease(l) || l.state !== 'active' || !l.boardId || this.o.pool.has(l.boardId)) continue;
      this.o.pool.add(await this.engineHost(l.boardId));
      this.o.tls.spend(l);
      lines.push(`shared board ${l.boardId}: engine of lease ${l.id} back in the pool`);
    }
    return lines;
  }

  /** Follows engine leases from now on. */
  start(): void {
    this.unsubscribe = this.o.bus.subscribe((ev) => this.onBus(ev));
  }

  stop(): void {
    this.unsubscribe?.();
    for (const w of this.waiting.values()) w.stop.abort();
    this.waiting.clear();
  }

  /** The operator's `dozen boards set <id> --role shared|whole`, or the keep-ready policy's (keep-ready.ts). */
  async setRole(boardId: string, role: 'shared' | 'whole', by: 'operator' | 'policy' = 'operator'): Promise<{ board: Board; lease?: Lease; job?: Job }> {
    const board = this.board(boardId);
    const engine = this.engineLease(boardId);
    if (role === 'shared') {
      if (engine?.state === 'releasing') throw new ConflictError(`board ${boardId} is being given back (engine lease ${engine.id} releasing): try again once it is available`);
      if (engine) return { board, lease: publicLease(engine) }; // already shared: nothing to do
      // An engine this service did not register under the board's id: a configured host (containers.hosts).
      if (this.o.pool.has(boardId)) throw new ConflictError(`board ${boardId}: a configured container host (containers.hosts) has that id; rename one of them`);
      const { lease, job } = await this.o.leases().holdForEngine(boardId, this.o.image, by);
      this.o.events.add(boardId, { type: 'state', message: `shared board (${by}): engine lease ${lease.id} (${this.o.image})` });
      return { board: this.board(boardId), lease, job };
    }
    if (board.role !== 'shared' && !engine) return { board }; // already whole (and a configured host of that id is not ours to drop)
    const containers = this.o.store.state.leases.filter((l) => l.kind === 'container' && l.state !== 'released');
    const running = containers.filter((l) => l.container?.hostId === boardId);
    if (running.length) {
      throw new ConflictError(`board ${boardId} runs ${running.length} container lease(s) (${running.map((l) => l.id).join(', ')}): they must move or end before it leaves the shared pool`);
    }
    // A container being placed has no record of its board yet: it might be landing on this one.
    const placing = containers.filter((l) => l.state === 'provisioning' && !l.container);
    if (placing.length && this.o.pool.has(boardId)) throw new ConflictError(`container lease(s) ${placing.map((l) => l.id).join(', ')} are being placed; try again once they are active`);
    this.unregister(boardId, 'given back to the whole-board pool');
    await this.o.store.update((s) => {
      const b = s.boards.find((x) => x.id === boardId);
      if (b) {
        delete b.role;
        delete b.sharedBy;
      }
    });
    let released: { lease: Lease; job: Job } | undefined;
    if (engine && engine.state !== 'releasing') released = await this.o.leases().release('system', engine.id, 'shared board given back to the whole-board pool');
    this.o.events.add(boardId, { type: 'state', message: `shared board given back to the whole-board pool (${by})` });
    return { board: this.board(boardId), ...(released ?? {}) };
  }

  status(boardId: string): SharedBoardStatus | undefined {
    const b = this.o.store.state.boards.find((x) => x.id === boardId);
    if (b?.role !== 'shared') return undefined;
    const lease = this.engineLease(boardId);
    if (!lease) return { engine: 'none' };
    const base = { engineLease: lease.id };
    if (this.o.pool.has(boardId)) {
      const h = this.o.pool.state(boardId);
      // In the pool: ready, or down (failing health checks, or marked down: drained) with the reason.
      return h.health === 'down' || h.markedDown ? { ...base, engine: 'down', ...(h.reason ? { reason: h.reason } : {}) } : { ...base, engine: 'ready' };
    }
    if (lease.state === 'error') return { ...base, engine: 'failed', ...(lease.stateReason ? { reason: lease.stateReason } : {}) };
    if (this.waiting.has(boardId)) return { ...base, engine: 'waiting' };
    const why = this.failed.get(boardId);
    if (why) return { ...base, engine: 'failed', reason: why };
    return { ...base, engine: lease.state === 'active' ? 'waiting' : 'provisioning' };
  }

  private onBus(ev: BusEvent): void {
    if (ev.type !== 'lease' || ev.tenantId !== SYSTEM_TENANT) return;
    const l = ev.data as Lease;
    if (!isEngineLease(l) || !l.boardId) return;
    if (l.state === 'active') this.watch(l.id);
    else if (l.state !== 'provisioning') this.unregister(l.boardId, `engine lease ${l.id} is ${l.state}`);
  }

  /** Waits for the engine of an active engine lease to answer, then puts it in the pool. */
  private watch(leaseId: string): void {
    const lease = this.o.store.state.leases.find((l) => l.id === leaseId);
    if (!lease?.boardId) return;
    const boardId = lease.boardId;
    const w = this.waiting.get(boardId);
    if (w && w.leaseId === leaseId && w.bootToken === lease.bootToken) return;
    if (this.o.pool.has(boardId)) return;
    w?.stop.abort();
    const stop = new AbortController();
    this.waiting.set(boardId, { leaseId, bootToken: lease.bootToken, stop });
    this.failed.delete(boardId);
    void this.register(lease, stop.signal)
      .catch((err: unknown) => {
        if (stop.signal.aborted) return;
        const why = (err as Error).message;
        this.failed.set(boardId, why);
        this.o.log.error({ board: boardId, lease: leaseId, err }, 'shared board: engine did not come up');
        this.o.events.add(boardId, { type: 'error', message: `shared board: engine did not answer: ${why}` });
      })
      .finally(() => {
        if (this.waiting.get(boardId)?.stop === stop) this.waiting.delete(boardId);
      });
  }

  private async register(lease: Lease, signal: AbortSignal): Promise<void> {
    const boardId = lease.boardId!;
    const board = this.board(boardId);
    const host = await this.engineHost(boardId);
    const deadline = Date.now() + this.o.readyTimeoutMs;
    const every = this.o.pingIntervalMs ?? 2_000;
    let last = 'no answer yet';
    for (;;) {
      if (signal.aborted) return;
      try {
        await host.ping(Math.min(5_000, every * 2));
        break;
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() + every > deadline) throw new Error(`no /_ping over TLS from ${board.ip}:${ENGINE_PORT} in ${Math.round(this.o.readyTimeoutMs / 1000)} s (last: ${last})`);
      await new Promise((r) => setTimeout(r, every));
    }
    if (signal.aborted || this.o.pool.has(boardId)) return;
    this.o.pool.add(host);
    this.o.pool.noteSuccess(boardId); // it has just answered: up, not `unknown` until the next health check
    // The board has its key and the controller has used it: the metadata service hands it out no more.
    this.o.tls.spend(this.o.store.state.leases.find((l) => l.id === lease.id) ?? lease);
    this.o.log.info({ board: boardId, lease: lease.id, engine: `${board.ip}:${ENGINE_PORT}` }, 'shared board: engine registered');
    this.o.events.add(boardId, { type: 'state', message: `shared board: engine ready at ${board.ip}:${ENGINE_PORT}` });
    const t0 = Date.now();
    void this.o.warm?.(host).then(
      () => this.o.log.info({ board: boardId, ms: Date.now() - t0 }, 'shared board: engine warmed (images, fence probe)'),
      (err: unknown) => this.o.log.warn({ board: boardId, err }, 'shared board: warming the engine failed (the first lease does it)'),
    );
  }

  private unregister(boardId: string, why: string): void {
    const w = this.waiting.get(boardId);
    if (w) {
      w.stop.abort();
      this.waiting.delete(boardId);
    }
    const lease = this.engineLease(boardId, true);
    if (lease?.state === 'released') this.o.tls.forget(lease.id);
    if (!this.o.pool.has(boardId)) return;
    // Containers still recorded there: the engine is marked down, so failover (if on) moves them and
    // placement passes it over; it leaves the pool once none remain (setRole whole checks that).
    const held = this.o.store.state.leases.some((l) => l.kind === 'container' && l.state !== 'released' && l.container?.hostId === boardId);
    if (held) {
      this.o.pool.markDown(boardId, `engine lease ${why}`);
      this.o.log.warn({ board: boardId }, `shared board: engine marked down, containers still recorded there (${why})`);
      return;
    }
    this.o.pool.remove(boardId);
    this.o.log.info({ board: boardId }, `shared board: engine left the pool (${why})`);
  }

  /** The board's engine as the pool drives it: its reserved address, Docker's TLS port, the controller's client certificate. */
  private async engineHost(boardId: string): Promise<ContainerHost> {
    const client = (await this.o.ca()).clientCert();
    const ip = this.board(boardId).ip;
    return containerHost({ ...this.o.hostDefaults, id: boardId, host: ip, port: ENGINE_PORT, ca: client.ca, cert: client.cert, key: client.key });
  }

  private board(id: string): Board {
    const b = this.o.store.state.boards.find((x) => x.id === id);
    if (!b) throw new NotFoundError(`board ${id}`);
    return { ...b };
  }

  /** The board's live engine lease (or, with `any`, its last one). */
  private engineLease(boardId: string, any = false): Lease | undefined {
    const all = this.o.store.state.leases.filter((l) => isEngineLease(l) && l.boardId === boardId);
    return (any ? all : all.filter((l) => l.state !== 'released')).at(-1);
  }
}

function isEngineLease(l: Pick<Lease, 'purpose' | 'tenantId'>): boolean {
  return l.purpose === 'engine' && l.tenantId === SYSTEM_TENANT;
}
