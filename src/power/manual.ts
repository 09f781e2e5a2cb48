import type { PowerDriver, PowerState } from './driver.js';

type Action = 'on' | 'off' | 'cycle';
interface Pending {
  action: Action;
  since: string;
  done: () => void;
}

/**
 * Boards whose power only a person can switch. An action waits until an operator confirms it
 * (POST /v1/boards/:id/power/confirm); the job step's timeout bounds the wait.
 */
export class ManualPowerDesk {
  private readonly pending = new Map<string, Pending[]>();
  private readonly states = new Map<string, PowerState>();

  request(boardId: string, action: Action): Promise<void> {
    return new Promise((resolve) => {
      const list = this.pending.get(boardId) ?? [];
      list.push({
        action,
        since: new Date().toISOString(),
        done: () => {
          this.states.set(boardId, action === 'off' ? 'off' : 'on');
          resolve();
        },
      });
      this.pending.set(boardId, list);
    });
  }

  /** What operators are asked to do. */
  waiting(boardId?: string): Array<{ boardId: string; action: Action; since: string }> {
    return [...this.pending.entries()]
      .filter(([id]) => !boardId || id === boardId)
      .flatMap(([id, list]) => list.map((p) => ({ boardId: id, action: p.action, since: p.since })));
  }

  /** The operator did it: complete the oldest waiting action. Returns false when nothing waited. */
  confirm(boardId: string): boolean {
    const next = this.pending.get(boardId)?.shift();
    if (!next) return false;
    next.done();
    return true;
  }

  state(boardId: string): PowerState {
    return this.states.get(boardId) ?? 'unknown';
  }
}

export const manualDesk = new ManualPowerDesk();

export class ManualPower implements PowerDriver {
  constructor(
    private readonly boardId: string,
    private readonly desk: ManualPowerDesk = manualDesk,
  ) {}
  on = () => this.desk.request(this.boardId, 'on');
  off = () => this.desk.request(this.boardId, 'off');
  cycle = () => this.desk.request(this.boardId, 'cycle');
  state = async () => this.desk.state(this.boardId);
}
