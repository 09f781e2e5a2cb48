import { abortReason, type PowerDriver, type PowerState } from './driver.js';

type Action = 'on' | 'off' | 'cycle';
interface Pending {
  action: Action;
  since: string;
  done: () => void;
}

/**
 * Boards whose power only a person can switch. An action waits until an operator confirms it
 * (POST /v1/boards/:id/power/confirm); the job step's timeout bounds the wait. An action whose signal
 * aborts (its job cancelled, its step timed out) leaves the desk: operators are no longer asked for it.
 */
export class ManualPowerDesk {
  private readonly pending = new Map<string, Pending[]>();
  private readonly states = new Map<string, PowerState>();

  request(boardId: string, action: Action, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const cancelled = () => new Error(`manual power ${action} of board ${boardId} cancelled (${abortReason(signal!)}): no longer asked of the operator`);
      if (signal?.aborted) return reject(cancelled());
      const onAbort = () => {
        this.withdraw(boardId, entry);
        reject(cancelled());
      };
      const entry: Pending = {
        action,
        since: new Date().toISOString(),
        done: () => {
          signal?.removeEventListener('abort', onAbort);
          this.states.set(boardId, action === 'off' ? 'off' : 'on');
          resolve();
        },
      };
      const list = this.pending.get(boardId) ?? [];
      list.push(entry);
      this.pending.set(boardId, list);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private withdraw(boardId: string, entry: Pending): void {
    const list = (this.pending.get(boardId) ?? []).filter((p) => p !== entry);
    if (list.length) this.pending.set(boardId, list);
    else this.pending.delete(boardId);
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
  on = (signal?: AbortSignal) => this.desk.request(this.boardId, 'on', signal);
  off = (signal?: AbortSignal) => this.desk.request(this.boardId, 'off', signal);
  cycle = (signal?: AbortSignal) => this.desk.request(this.boardId, 'cycle', signal);
  state = async () => this.desk.state(this.boardId);
}
