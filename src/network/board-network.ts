import { log as rootLog, type Logger } from '../log.js';
import type { BoardIsolation, NetworkDriver, NetworkState } from './driver.js';

/** What the server knows of a board that the network needs. */
export interface NetworkBoard {
  id: string;
  mac: string;
  ip: string;
  port?: string;
}

export interface NetworkHealth {
  driver: string;
  boardIsolation: BoardIsolation;
  /** Empty when every enrolled board's port is fenced as it should be. */
  problems: string[];
}

/** A tenant's private network id: all its boards share one. */
export const tenantNetwork = (tenantId: string) => `tenant-${tenantId}`;

/**
 * The server's side of the network seam: keeps the driver's attached ports equal to the enrolled boards
 * (on start and on every inventory change), puts leased boards into their tenant's network, and
 * reports health. One operation at a time, so a sync never races a join.
 */
export class BoardNetwork {
  private queue: Promise<unknown> = Promise.resolve();
  private last: NetworkHealth;

  constructor(
    readonly driver: NetworkDriver,
    private readonly log: Logger = rootLog,
  ) {
    this.last = { driver: driver.name, boardIsolation: isolationOf(driver.name), problems: [] };
  }

  /** Installs the datapath, attaches the boards and rejoins the networks of live leases. */
  start(boards: NetworkBoard[], members: Array<{ boardId: string; tenantId: string }>): Promise<NetworkHealth> {
    return this.serial(async () => {
      await this.driver.start();
      await this.doSync(boards);
      // As join(): under `none` there is nothing to join. A leased board that is not attached (its port
      // removed, or refused by doSync) cannot be joined either: refresh() names it in health.
      const attached = new Set(this.driver.ports().map((p) => p.boardId));
      for (const m of isolationOf(this.driver.name) === 'none' ? [] : members) {
        if (!attached.has(m.boardId)) {
          this.log.error({ board: m.boardId }, 'network: a live lease\'s board is not attached to the boot network: its traffic is not fenced (see GET /v1/network)');
          continue;
        }
        await this.driver.join(m.boardId, tenantNetwork(m.tenantId)).catch((err: Error) => this.log.error({ err, board: m.boardId }, 'network: rejoining a lease network failed'));
      }
      return this.refresh(boards);
    });
  }

  /** Attach what is enrolled (again, when its MAC, IP or port changed); detach what is gone. */
  sync(boards: NetworkBoard[]): Promise<NetworkHealth> {
    return this.serial(async () => {
      await this.doSync(boards);
      return this.refresh(boards);
    });
  }

  /**
   * Under a fencing driver a board whose port is not attached cannot be leased: it would be on the boot
   * network unfenced. Under `none` there is nothing to join.
   */
  join(boardId: string, tenantId: string): Promise<void> {
    return this.serial(async () => {
      if (this.last.boardIsolation === 'none') return;
      if (!(await this.attached(boardId))) {
        throw new Error(`board ${boardId} has no fenced port on the boot network (set its "port"; see GET /v1/network): it cannot be leased unfenced`);
      }
      await this.driver.join(boardId, tenantNetwork(tenantId));
    });
  }

  /** Out of its tenant's network; a board that is in none, or not attached, is not an error. */
  leave(boardId: string): Promise<void> {
    return this.serial(async () => {
      if (await this.attached(boardId)) await this.driver.leave(boardId);
    });
  }

  /** Whether a lease may take this board now: its port is fenced (or the driver is `none`). Allocation asks. */
  fenced(boardId: string): boolean {
    return this.last.boardIsolation === 'none' || this.driver.ports().some((p) => p.boardId === boardId);
  }

  private async attached(boardId: string): Promise<boolean> {
    return this.driver.ports().some((p) => p.boardId === boardId);
  }

  /** As of the last start or sync (cheap: /v1/health reads it). */
  health(): NetworkHealth {
    return this.last;
  }

  /** The driver's full view, checked against the datapath now (admins). */
  state(): Promise<NetworkState> {
    return this.driver.state();
  }

  /** Removes the datapath (the lab going away); ports are left fail-closed otherwise, so a stopping server does not call it. */
  stop(): Promise<void> {
    return this.serial(() => this.driver.stop());
  }

  private async doSync(boards: NetworkBoard[]): Promise<void> {
    const ports = this.driver.ports();
    const have = new Map(ports.map((p) => [p.boardId, p]));
    const want = boards.filter((b) => b.port);
    for (const p of ports) {
      if (!want.some((b) => b.id === p.boardId)) await this.driver.detach(p.boardId);
    }
    for (const b of want) {
      const h = have.get(b.id);
      if (h && h.port === b.port && h.mac === b.mac.toLowerCase() && h.ip === b.ip) continue;
      try {
        await this.driver.attach({ boardId: b.id, port: b.port!, mac: b.mac, ip: b.ip });
      } catch (err) {
        // One bad record must not leave every other board unfenced: report it, go on.
        this.log.error({ err, board: b.id }, 'network: cannot attach the board port');
      }
    }
  }

  private async refresh(boards: NetworkBoard[]): Promise<NetworkHealth> {
    const st = await this.driver.state();
    const problems = [...st.problems];
    if (st.boardIsolation !== 'none') {
      const attached = new Map(st.ports.map((p) => [p.boardId, p]));
      for (const b of boards) {
        const a = attached.get(b.id);
        if (!b.port) problems.push(`board ${b.id} has no network port: it is not fenced (set its "port")`);
        else if (!a) problems.push(`board ${b.id}: port ${b.port} could not be attached (see the log)`);
        else if (a.port !== b.port || a.mac !== b.mac.toLowerCase() || a.ip !== b.ip) {
          problems.push(`board ${b.id} is fenced as ${a.port} ${a.mac} ${a.ip} but enrolled as ${b.port} ${b.mac.toLowerCase()} ${b.ip} (see the log)`);
        }
      }
    }
    this.last = { driver: st.driver, boardIsolation: st.boardIsolation, problems };
    return this.last;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => {});
    return next;
  }
}

function isolationOf(driver: string): BoardIsolation {
  return driver === 'none' ? 'none' : driver === 'command' ? 'operator' : 'enforced';
}
