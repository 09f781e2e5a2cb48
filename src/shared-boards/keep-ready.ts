/**
 * The keep-ready policy (containers.shared.keep): at least K shared boards with a working engine
 * (provisioning, waiting for /_ping or ready) exist, taken from the available whole boards that can run
 * the engine image; a board the policy took goes back to the whole-board pool once there are more than K
 * and it has run no container for idleMs, or at once when its engine failed. Boards an operator made
 * shared are theirs: the policy counts them but never gives them back.
 */
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import type { SharedBoards } from './shared-boards.js';

export interface KeepReadyOptions {
  shared: Pick<SharedBoards, 'setRole' | 'status'>;
  store: Store;
  log: Logger;
  /** K: shared boards to keep. 0: the policy does nothing. */
  keep: number;
  /** How long a policy-made shared board must have run no container before it goes back. */
  idleMs: number;
  now?: () => number;
}

export class KeepReady {
  /** Policy-made shared boards: when each last ran a container (or became shared). */
  private readonly lastBusy = new Map<string, number>();
  /** Boards that could not become shared (another model, no fenced port): not asked again for a while. */
  private readonly unfit = new Map<string, number>();
  private running?: Promise<string[]>;
  private timer?: NodeJS.Timeout;

  constructor(private readonly o: KeepReadyOptions) {}

  start(intervalMs = 10_000): void {
    if (this.o.keep <= 0 && !this.o.store.state.boards.some((b) => b.sharedBy === 'policy')) return;
    this.timer = setInterval(() => void this.tick().catch((err) => this.o.log.warn({ err }, 'keep-ready: a round failed')), intervalMs);
    this.timer.unref();
    void this.tick().catch((err) => this.o.log.warn({ err }, 'keep-ready: a round failed'));
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One round; returns what it did (one line per board). Rounds never overlap. */
  tick(): Promise<string[]> {
    this.running ??= this.round().finally(() => (this.running = undefined));
    return this.running;
  }

  private async round(): Promise<string[]> {
    const now = (this.o.now ?? Date.now)();
    const done: string[] = [];
    const s = this.o.store.state;
    const busy = new Set(s.leases.filter((l) => l.kind === 'container' && l.state !== 'released' && l.container).map((l) => l.container!.hostId));
    const shared = s.boards.filter((b) => b.role === 'shared');
    for (const b of shared) if (b.sharedBy === 'policy' && (busy.has(b.id) || !this.lastBusy.has(b.id))) this.lastBusy.set(b.id, now);
    // A shared board whose engine failed (or has none) is no shared board for K: the policy gives its own
    // back, and does not take it again for a while.
    const failed = (id: string) => ['failed', 'none'].includes(this.o.shared.status(id)?.engine ?? 'none');
    for (const b of shared.filter((x) => x.sharedBy === 'policy' && failed(x.id) && !busy.has(x.id))) {
      try {
        await this.o.shared.setRole(b.id, 'whole', 'policy');
        this.lastBusy.delete(b.id);
        this.unfit.set(b.id, now + 10 * 60_000);
        done.push(`${b.id}: given back (its engine failed)`);
      } catch (err) {
        this.o.log.warn({ board: b.id, err: (err as Error).message }, 'keep-ready: could not give a failed shared board back');
      }
    }
    let count = shared.filter((b) => !failed(b.id)).length;

    for (const b of [...s.boards].filter((x) => x.state === 'available' && x.role !== 'shared').sort((x, y) => x.id.localeCompare(y.id))) {
      if (count >= this.o.keep) break;
      if ((this.unfit.get(b.id) ?? 0) > now) continue;
      try {
        await this.o.shared.setRole(b.id, 'shared', 'policy');
        this.lastBusy.set(b.id, now);
        count++;
        done.push(`${b.id}: made shared (keep ${this.o.keep})`);
      } catch (err) {
        this.unfit.set(b.id, now + 10 * 60_000);
        this.o.log.debug({ board: b.id, err: (err as Error).message }, 'keep-ready: board cannot be shared');
      }
    }

    const idle = shared.filter((b) => b.sharedBy === 'policy' && !failed(b.id) && !busy.has(b.id) && now - (this.lastBusy.get(b.id) ?? now) >= this.o.idleMs).sort((x, y) => x.id.localeCompare(y.id));
    for (const b of idle) {
      if (count <= this.o.keep) break;
      try {
        await this.o.shared.setRole(b.id, 'whole', 'policy');
        this.lastBusy.delete(b.id);
        count--;
        done.push(`${b.id}: given back (idle, keep ${this.o.keep})`);
      } catch (err) {
        this.o.log.warn({ board: b.id, err: (err as Error).message }, 'keep-ready: could not give the board back');
      }
    }
    for (const line of done) this.o.log.info(`keep-ready: ${line}`);
    return done;
  }
}
