import { EventEmitter } from 'node:events';
import type { ConsoleSource, ConsoleSourceEvents, ConsoleState, Connector, Transport } from './source.js';

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  factor: number;
  /** Fraction of random spread, so boards on one USB hub do not retry in lockstep. */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 200, maxMs: 10_000, factor: 2, jitter: 0.2 };

export function backoffDelay(attempt: number, o: BackoffOptions = DEFAULT_BACKOFF): number {
  const base = Math.min(o.maxMs, o.initialMs * o.factor ** Math.max(0, attempt));
  return Math.round(base * (1 - o.jitter / 2 + Math.random() * o.jitter));
}

/**
 * The one reconnect helper for every kind of line: owns a connector, keeps one transport up, and when the
 * transport reports `disconnected` (USB unplugged, board powered off, QEMU gone with its pty, ser2net
 * restarted) tries again with exponential backoff, forever, until closed. State changes are events.
 */
export class ReconnectingSource extends EventEmitter<ConsoleSourceEvents> implements ConsoleSource {
  private transport?: Transport;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private st: ConsoleState;

  constructor(
    private readonly connector: Connector,
    private readonly backoff: BackoffOptions = DEFAULT_BACKOFF,
  ) {
    super();
    this.st = { target: connector.target, state: 'connecting', since: new Date().toISOString(), attempts: 0, bytesIn: 0, bytesOut: 0 };
    void this.attempt();
  }

  get target(): string {
    return this.connector.target;
  }

  state(): ConsoleState {
    return { ...this.st };
  }

  async write(bytes: Uint8Array): Promise<void> {
    const t = this.up();
    await t.write(bytes);
    this.st.bytesOut += bytes.length;
  }

  async sendBreak(): Promise<void> {
    await this.up().sendBreak();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    const t = this.transport;
    this.transport = undefined;
    await t?.close().catch(() => {});
    this.set({ state: 'closed', retryInMs: undefined });
  }

  private up(): Transport {
    if (!this.transport) throw new Error(`console line ${this.target} is ${this.st.state}${this.st.lastError ? ` (${this.st.lastError})` : ''}`);
    return this.transport;
  }

  private async attempt(): Promise<void> {
    if (this.closed) return;
    let t: Transport;
    try {
      t = await this.connector.connect();
    } catch (err) {
      this.st.attempts++;
      this.retry((err as Error).message);
      return;
    }
    if (this.closed) {
      await t.close().catch(() => {});
      return;
    }
    this.transport = t;
    t.on('data', (chunk) => {
      this.st.bytesIn += chunk.length;
      this.emit('data', chunk);
    });
    t.once('disconnected', (err) => {
      if (this.transport !== t) return;
      this.transport = undefined;
      t.removeAllListeners('data');
      void t.close().catch(() => {});
      this.st.attempts = 0;
      this.retry(err.message);
    });
    this.set({ state: 'connected', attempts: 0, lastError: undefined, retryInMs: undefined });
  }

  private retry(reason: string): void {
    if (this.closed) return;
    const delay = backoffDelay(this.st.attempts, this.backoff);
    this.set({ state: 'disconnected', lastError: reason, retryInMs: delay });
    this.timer = setTimeout(() => void this.attempt(), delay);
  }

  /** Emits only real changes: a missing device retried every 10 s is one `disconnected`, not a stream of them. */
  private set(patch: Partial<ConsoleState>): void {
    const changed = (patch.state !== undefined && patch.state !== this.st.state) || ('lastError' in patch && patch.lastError !== this.st.lastError);
    if (patch.state !== undefined && patch.state !== this.st.state) this.st.since = new Date().toISOString();
    Object.assign(this.st, patch);
    if (changed) this.emit('state', this.state());
  }
}
