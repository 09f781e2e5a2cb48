import { EventEmitter } from 'node:events';
import { NotFoundError } from '../util/errors.js';
import { HostUnavailableError } from './errors.js';
import { ContainerHost, type ContainerHostConfig } from './host.js';
import { containerHost } from './hosts.js';

export type HostHealth = 'up' | 'down' | 'unknown';

export interface HostState {
  id: string;
  /** From health checks (pings) and failed calls; `unknown` until the first check. */
  health: HostHealth;
  /** Set by an operator (markDown); placement and failover treat the board as down until markUp. */
  markedDown: boolean;
  reason?: string;
  checkedAt?: string;
  /** Consecutive failed pings/calls. */
  failures: number;
}

export interface PoolOptions {
  /** Consecutive failures before a board counts as down (one flaky ping shouldn't move leases). */
  failThreshold?: number;
  pingTimeoutMs?: number;
}

/**
 * The `shared` pool: several boards' Docker engines and what we know of their health.
 * Emits `down` (state) when a board stops being usable (failed checks or marked down) and `up` (state)
 * when it comes back; failover listens to `down` (failover.ts).
 */
export class ContainerPool extends EventEmitter {
  private readonly byId = new Map<string, ContainerHost>();
  private readonly stateById = new Map<string, HostState>();
  private timer?: NodeJS.Timeout;
  /** Boards being drained: placement passes them over; they stay usable for the leases still on them. */
  private readonly draining = new Set<string>();
  private readonly failThreshold: number;
  private readonly pingTimeoutMs: number;

  constructor(hosts: Array<ContainerHost | ContainerHostConfig>, opts: PoolOptions = {}) {
    super();
    this.failThreshold = opts.failThreshold ?? 2;
    this.pingTimeoutMs = opts.pingTimeoutMs ?? 3_000;
    for (const h of hosts) this.add(h instanceof ContainerHost ? h : containerHost(h));
  }

  add(host: ContainerHost): void {
    if (this.byId.has(host.id)) throw new Error(`shared board ${host.id} is configured twice`);
    this.byId.set(host.id, host);
    this.stateById.set(host.id, { id: host.id, health: 'unknown', markedDown: false, failures: 0 });
    // Every Docker call on the board counts as a health check.
    host.onReachability = (err) => (err ? this.noteFailure(host.id, err) : this.noteSuccess(host.id));
  }

  /**
   * Takes a board's engine out of the pool (a shared board given back, or its engine lease ended). What
   * runs on it is the caller's to move first; a check still in flight for it reports to nobody.
   */
  remove(id: string): boolean {
    const host = this.byId.get(id);
    if (!host) return false;
    host.onReachability = undefined;
    this.byId.delete(id);
    this.stateById.delete(id);
    return true;
  }

  hosts(): ContainerHost[] {
    return [...this.byId.values()];
  }

  get(id: string): ContainerHost {
    const h = this.byId.get(id);
    if (!h) throw new NotFoundError(`shared board ${id}`);
    return h;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  state(id: string): HostState {
    this.get(id);
    return { ...this.stateById.get(id)! };
  }

  states(): HostState[] {
    return [...this.stateById.values()].map((s) => ({ ...s }));
  }

  /** Usable for placement and lease operations: not marked down and not failing health checks. */
  isUsable(id: string): boolean {
    const s = this.state(id);
    return !s.markedDown && s.health !== 'down';
  }

  /** Why a board is not usable, for placement messages ("is down (marked by operator: ...)"). */
  downReason(id: string): string | null {
    const s = this.state(id);
    if (s.markedDown) return `is down (marked by operator${s.reason ? `: ${s.reason}` : ''})`;
    if (s.health === 'down') return `is down${s.reason ? ` (${s.reason})` : ''}`;
    return null;
  }

  setDraining(id: string, on: boolean): void {
    if (on) this.draining.add(id);
    else this.draining.delete(id);
  }

  isDraining(id: string): boolean {
    return this.draining.has(id);
  }

  markDown(id: string, reason?: string): void {
    this.get(id);
    this.update(id, (s) => ({ ...s, markedDown: true, reason: reason ?? s.reason }));
  }

  markUp(id: string): void {
    this.get(id);
    this.update(id, (s) => ({ ...s, markedDown: false, reason: s.health === 'down' ? s.reason : undefined }));
  }

  /** Pings the given boards (default: all) in parallel and updates their health. */
  async check(ids: string[] = [...this.byId.keys()]): Promise<HostState[]> {
    await Promise.all(
      ids.map(async (id) => {
        // The host reports the outcome to us itself (onReachability).
        await this.get(id).ping(this.pingTimeoutMs).catch(() => {});
      }),
    );
    return ids.map((id) => this.state(id));
  }

  /** A call reached the engine: the board is up. */
  noteSuccess(id: string): void {
    this.update(id, (s) => ({
      ...s,
      health: 'up',
      failures: 0,
      reason: s.markedDown ? s.reason : undefined,
      checkedAt: new Date().toISOString(),
    }));
  }

  /** A ping or call could not reach the engine; only unreachability counts, not Docker saying no. */
  noteFailure(id: string, err: unknown): void {
    if (err && !(err instanceof HostUnavailableError)) return;
    const reason = err instanceof HostUnavailableError ? `unreachable: ${err.reason}` : 'unreachable';
    this.update(id, (s) => {
      const failures = s.failures + 1;
      return {
        ...s,
        failures,
        health: failures >= this.failThreshold ? 'down' : s.health,
        reason: s.markedDown ? s.reason : reason,
        checkedAt: new Date().toISOString(),
      };
    });
  }

  /** Pings every board every intervalMs. */
  startHealthChecks(intervalMs = 10_000): void {
    this.stopHealthChecks();
    const tick = () => {
      void this.check().finally(() => {
        if (this.timer) this.timer = setTimeout(tick, intervalMs);
      });
    };
    this.timer = setTimeout(tick, 0);
  }

  stopHealthChecks(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private update(id: string, fn: (s: HostState) => HostState): void {
    const before = this.stateById.get(id);
    if (!before) return; // removed while a call to it was in flight
    const after = fn(before);
    this.stateById.set(id, after);
    const wasUsable = !before.markedDown && before.health !== 'down';
    const usable = !after.markedDown && after.health !== 'down';
    if (wasUsable && !usable) this.emit('down', { ...after });
    if (!wasUsable && usable) this.emit('up', { ...after });
  }
}
