import type { BoardEvent, BoardEvents } from '../inventory/events.js';

/**
 * Resolve when the board reports a matching event at or after `sinceMs` (already recorded ones count,
 * so an event between two steps is never missed); reject when the signal aborts.
 */
export function waitForBoardEvent(events: BoardEvents, boardId: string, match: (e: BoardEvent) => boolean, sinceMs: number, signal: AbortSignal): Promise<BoardEvent> {
  return new Promise((resolve, reject) => {
    const ok = (e: BoardEvent) => Date.parse(e.time) >= sinceMs && match(e);
    const seen = events.list(boardId).find(ok);
    if (seen) return resolve(seen);
    const off = events.subscribe((id, e) => {
      if (id === boardId && ok(e)) {
        off();
        resolve(e);
      }
    });
    signal.addEventListener('abort', () => {
      off();
      reject(new Error('aborted'));
    });
  });
}

/** Signals a lease's own OS sends to the metadata service: metadata fetched, phoned home. */
export class LeaseSignals {
  private readonly seen = new Map<string, Map<string, number>>();
  private readonly waiters = new Set<() => void>();

  note(leaseId: string, what: 'metadata' | 'phone-home'): void {
    let m = this.seen.get(leaseId);
    if (!m) this.seen.set(leaseId, (m = new Map()));
    m.set(what, Date.now());
    for (const w of [...this.waiters]) w();
  }

  forget(leaseId: string): void {
    this.seen.delete(leaseId);
  }

  wait(leaseId: string, what: Array<'metadata' | 'phone-home'>, sinceMs: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = this.seen.get(leaseId);
        if (what.some((w) => (m?.get(w) ?? -1) >= sinceMs)) {
          this.waiters.delete(check);
          resolve();
        }
      };
      this.waiters.add(check);
      signal.addEventListener('abort', () => {
        this.waiters.delete(check);
        reject(new Error('aborted'));
      });
      check();
    });
  }
}
