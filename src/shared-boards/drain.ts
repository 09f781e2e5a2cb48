/**
 * `dozen boards drain <id>` (issue #15): every container lease on a shared board moves to another one and
 * keeps its changes and its /data (ContainerLeaseDriver.migrate), one at a time, through the lease state
 * machine (active → migrating → active, on the event bus). The board takes no new leases meanwhile and is
 * marked down (`drained`) when empty; `undrain` puts it back in service.
 */
import type { ContainerFailover } from '../leases/ports.js';
import type { Logger } from '../log.js';
import type { ContainerPool } from '../containers/pool.js';
import type { Migration } from '../containers/migrate.js';
import { containerRecordOf, containerRecords } from '../containers/lease-port.js';
import type { ContainerLease, RecordedContainerLease } from '../containers/types.js';
import type { BoardEvents } from '../inventory/events.js';
import type { Store } from '../store/store.js';
import { ConflictError, NotFoundError } from '../util/errors.js';

export interface DrainMover {
  migrate(record: RecordedContainerLease, opts: { exclude?: string[]; onPlaced?: (lease: ContainerLease) => Promise<void> }): Promise<Migration>;
  waitReady(leaseId: string): Promise<string>;
}

export interface DrainLeases {
  beginFailover(leaseIds: string[], from: string, why?: string): Promise<string[]>;
  recordFailover(f: ContainerFailover, failedWhy?: (from: string) => string): Promise<void>;
}

/** One lease's move, as the drain reports it. */
export interface MovedLease {
  leaseId: string;
  to: string;
  /** Stop on the old board → the tenant's SSH answering on the new one. */
  downtimeMs: number;
  bytesMoved: number;
  /** Where the downtime went (migrate.ts), and `ready`: the start → the tenant's SSH answering. */
  phasesMs: Record<string, number>;
}

export interface DrainStatus {
  state: 'running' | 'done' | 'failed';
  startedAt: string;
  endedAt?: string;
  moved: MovedLease[];
  failed: Array<{ leaseId: string; error: string }>;
}

export class BoardDrains {
  private readonly byBoard = new Map<string, DrainStatus>();

  constructor(
    private readonly o: { store: Store; pool: ContainerPool; mover: () => DrainMover; leases: () => DrainLeases; events: BoardEvents; log: Logger },
  ) {}

  status(boardId: string): DrainStatus | undefined {
    const s = this.byBoard.get(boardId);
    return s && structuredClone(s);
  }

  /** Starts draining; answers at once with the leases it will move. */
  start(boardId: string): { board: string; leases: string[]; drain: DrainStatus } {
    const b = this.o.store.state.boards.find((x) => x.id === boardId);
    if (!b) throw new NotFoundError(`board ${boardId}`);
    if (b.role !== 'shared' || !this.o.pool.has(boardId)) throw new ConflictError(`board ${boardId} is not a shared board with a registered engine`);
    if (this.byBoard.get(boardId)?.state === 'running') throw new ConflictError(`board ${boardId} is already being drained`);
    const records = containerRecords(this.o.store.state.leases).filter((r) => r.hostId === boardId);
    const status: DrainStatus = { state: 'running', startedAt: new Date().toISOString(), moved: [], failed: [] };
    this.byBoard.set(boardId, status);
    this.o.pool.setDraining(boardId, true);
    this.o.events.add(boardId, { type: 'state', message: `drain: moving ${records.length} container lease(s) to other shared boards` });
    void this.run(boardId, records, status).catch((err: unknown) => {
      status.state = 'failed';
      status.endedAt = new Date().toISOString();
      this.o.log.error({ err, board: boardId }, 'drain failed');
    });
    return { board: boardId, leases: records.map((r) => r.leaseId), drain: structuredClone(status) };
  }

  /** Back in service: placement may use it again. */
  undrain(boardId: string): { board: string } {
    if (!this.o.pool.has(boardId)) throw new ConflictError(`board ${boardId} has no registered engine`);
    if (this.byBoard.get(boardId)?.state === 'running') throw new ConflictError(`board ${boardId} is being drained`);
    this.o.pool.setDraining(boardId, false);
    this.o.pool.markUp(boardId);
    this.byBoard.delete(boardId);
    this.o.events.add(boardId, { type: 'state', message: 'drain: back in service' });
    return { board: boardId };
  }

  private async run(boardId: string, records: RecordedContainerLease[], status: DrainStatus): Promise<void> {
    const why = `shared board ${boardId} is being drained: the container moves to another board with its changes and /data`;
    for (const first of records) {
      // As recorded now (a reimage since the drain began has a new container), and only if still here.
      const rec = containerRecords(this.o.store.state.leases).find((r) => r.leaseId === first.leaseId && r.hostId === boardId);
      if (!rec) continue;
      if (!(await this.o.leases().beginFailover([rec.leaseId], boardId, why)).length) {
        status.failed.push({ leaseId: rec.leaseId, error: 'not active (being released, reimaged or in error): not moved' });
        continue;
      }
      const t0 = Date.now();
      let placed = false;
      try {
        // Recorded as soon as the new container runs, before the old one goes (migrate.ts).
        const onPlaced = async (c: ContainerLease) => {
          await this.o.leases().recordFailover({ moved: [{ leaseId: rec.leaseId, container: containerRecordOf(c) }], failed: [] });
          placed = true;
        };
        const m = await this.o.mover().migrate(rec, { exclude: [boardId], onPlaced });
        const started = Date.now();
        // It runs and is recorded; a slow SSH start is worth a note, not a rollback.
        const ready = await this.o.mover().waitReady(rec.leaseId).then(
          () => true,
          (err: Error) => (this.o.log.warn({ lease: rec.leaseId, err: err.message }, 'drain: moved, but its SSH did not answer in time'), false),
        );
        const moved = { leaseId: rec.leaseId, to: m.lease.hostId, downtimeMs: Date.now() - t0, bytesMoved: m.bytesMoved, phasesMs: { ...m.phasesMs, ...(ready ? { ready: Date.now() - started } : {}) } };
        status.moved.push(moved);
        this.o.events.add(boardId, { type: 'state', message: `drain: lease ${rec.leaseId} moved to ${moved.to} (down ${(moved.downtimeMs / 1000).toFixed(1)} s, ${moved.bytesMoved} bytes)` });
      } catch (err) {
        const error = (err as Error).message;
        status.failed.push({ leaseId: rec.leaseId, error });
        // The move rolls back to this board when it can: the lease is active here again, else in error.
        if (!placed) {
          const restarted = !/could not be restarted/.test(error);
          await this.o.leases().recordFailover(
            restarted ? { moved: [{ leaseId: rec.leaseId, container: this.o.store.state.leases.find((l) => l.id === rec.leaseId)!.container! }], failed: [] } : { moved: [], failed: [{ leaseId: rec.leaseId, from: boardId, error }] },
            (from) => `the drain of shared board ${from} could not move the container`,
          );
        }
        this.o.events.add(boardId, { type: 'error', message: `drain: lease ${rec.leaseId} not moved: ${error}` });
      }
    }
    // Done only when nothing is left here (a lease placed before the drain began to refuse new ones counts too).
    const left = containerRecords(this.o.store.state.leases).filter((r) => r.hostId === boardId);
    for (const l of left) if (!status.failed.some((f) => f.leaseId === l.leaseId)) status.failed.push({ leaseId: l.leaseId, error: 'still on the board (placed while the drain began); drain again' });
    status.state = left.length || status.failed.length ? 'failed' : 'done';
    status.endedAt = new Date().toISOString();
    if (status.state === 'done') {
      this.o.pool.markDown(boardId, 'drained'); // empty now: nothing for failover to move
      this.o.pool.setDraining(boardId, false);
    }
    this.o.log.info({ board: boardId, moved: status.moved, failed: status.failed }, 'drain ended');
  }
}
