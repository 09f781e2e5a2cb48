import { EventEmitter } from 'node:events';
import type { LeaseLogWriter } from './lease-log.js';
import type { InfoEvent, ServerMessage, ViewerInfo } from './protocol.js';
import { RingBuffer } from './ring.js';
import type { ConsoleSource, ConsoleSourceEvents, ConsoleState } from './source.js';

/** Someone watching a board's console: the WebSocket bridge implements it; the session knows nothing of sockets. */
export interface Viewer {
  readonly who: string;
  readonly canType: boolean;
  /** Must not block and must bound its own memory (the bridge drops viewers that fall behind). */
  send(chunk: Buffer): void;
  notify(msg: ServerMessage): void;
  /** The session is going away (board removed, server stopping). */
  end(reason: string): void;
}

/** A new typist is announced when the typist changes or after this much quiet. */
const TYPING_ANNOUNCE_QUIET_MS = 3000;

/**
 * Typing policy — a shared terminal, like a shared tmux session: every viewer granted `canType` may type
 * at any time; there is no lock to take, forget or fight over (a forgotten lock on a board whose kernel
 * just panicked is worse than an occasional interleaved keystroke). Each input frame reaches the line
 * whole, so two people's keystrokes never mix inside a frame. Everyone is told who is typing: when the
 * typist changes, or someone starts again after 3 s of quiet, all viewers get `info` event `typing` with
 * `who`. A new viewer's hello lists who is there and whether each may type; after that, `join`/`leave`
 * name one viewer and the new count (a list on every join would cost O(n²) over n joins). Input from a
 * watch-only viewer is dropped and that viewer alone gets one `denied` notice.
 */
export class BoardSession extends EventEmitter<ConsoleSourceEvents> {
  private readonly ring: RingBuffer;
  private readonly viewers = new Set<Viewer>();
  private lastTypist?: { who: string; at: number };
  private leaseLog?: { leaseId: string; writer: LeaseLogWriter };
  /** Input accepted but not yet taken by the line: a paste into a 115200-baud line must not grow without bound. */
  private pendingInput = 0;

  constructor(
    readonly boardId: string,
    readonly serial: string,
    readonly source: ConsoleSource,
    scrollbackBytes: number,
    private readonly maxPendingInput = 256 * 1024,
  ) {
    super();
    this.ring = new RingBuffer(scrollbackBytes);
    source.on('data', (chunk) => {
      this.ring.write(chunk);
      this.leaseLog?.writer.append(chunk);
      for (const v of this.viewers) v.send(chunk);
      this.emit('data', chunk);
    });
    source.on('state', (st) => {
      this.leaseLog?.writer.append(Buffer.from(`\r\n[dozen: console ${st.state}${st.lastError ? `: ${st.lastError}` : ''}]\r\n`));
      this.broadcast({ type: 'state', ...st });
      this.emit('state', st);
    });
  }

  state(): ConsoleState {
    return this.source.state();
  }

  viewerList(): ViewerInfo[] {
    return [...this.viewers].map((v) => ({ who: v.who, canType: v.canType }));
  }

  /**
   * Adds a viewer and returns the scrollback it must be sent first. Synchronous on purpose: no output can
   * arrive between the snapshot and the registration, so a late joiner misses nothing and sees nothing twice.
   */
  attach(v: Viewer): Buffer {
    const snapshot = this.ring.snapshot();
    this.viewers.add(v);
    this.info('join', `${v.who} joined${v.canType ? '' : ' (watching)'}`, { who: v.who, canType: v.canType, count: this.viewers.size });
    return snapshot;
  }

  detach(v: Viewer): void {
    if (this.viewers.delete(v)) this.info('leave', `${v.who} left`, { who: v.who, count: this.viewers.size });
  }

  async write(v: Viewer, bytes: Uint8Array): Promise<void> {
    if (!v.canType) return this.deny(v, 'you may watch this console but not type');
    if (this.pendingInput + bytes.length > this.maxPendingInput) return this.deny(v, 'input dropped: the serial line is not keeping up with it');
    const now = Date.now();
    if (this.lastTypist?.who !== v.who || now - this.lastTypist.at > TYPING_ANNOUNCE_QUIET_MS) {
      this.info('typing', `${v.who} is typing`, { who: v.who });
    }
    this.lastTypist = { who: v.who, at: now };
    this.pendingInput += bytes.length;
    try {
      await this.source.write(bytes);
    } catch (err) {
      v.notify({ type: 'info', event: 'error', message: `input not sent: ${(err as Error).message}` });
    } finally {
      this.pendingInput -= bytes.length;
    }
  }

  async sendBreak(v: Viewer): Promise<void> {
    if (!v.canType) return this.deny(v, 'you may watch this console but not send BREAK');
    try {
      await this.source.sendBreak();
      this.info('break', `${v.who} sent BREAK`, { who: v.who });
    } catch (err) {
      v.notify({ type: 'info', event: 'error', message: `BREAK not sent: ${(err as Error).message}` });
    }
  }

  /** Lease logs: output from now on also goes to this writer (the previous one, if any, is returned to be closed). */
  setLeaseLog(log?: { leaseId: string; writer: LeaseLogWriter }): { leaseId: string; writer: LeaseLogWriter } | undefined {
    const prev = this.leaseLog;
    this.leaseLog = log;
    return prev;
  }

  /** Resolves once the lease log holds everything received so far. */
  async leaseLogIdle(): Promise<void> {
    await this.leaseLog?.writer.idle();
  }

  /** A lease ended or began on this line: what the last tenant's boards printed is not the next one's to read. */
  clearScrollback(): void {
    this.ring.clear();
  }

  get leaseId(): string | undefined {
    return this.leaseLog?.leaseId;
  }

  async close(reason: string): Promise<void> {
    const viewers = [...this.viewers];
    this.viewers.clear();
    for (const v of viewers) v.end(reason);
    await this.source.close();
    await this.setLeaseLog()?.writer.close();
  }

  /** One small message to every viewer: the full list goes only in a new viewer's hello (ws-bridge.ts). */
  private info(event: InfoEvent, message: string, extra: { who?: string; canType?: boolean; count?: number } = {}): void {
    this.broadcast({ type: 'info', event, message, ...extra });
  }

  private broadcast(msg: ServerMessage): void {
    for (const v of this.viewers) v.notify(msg);
  }

  private readonly toldReadOnly = new WeakSet<Viewer>();
  private deny(v: Viewer, message: string): void {
    if (!v.canType) {
      if (this.toldReadOnly.has(v)) return; // once is enough; a watcher's keystrokes are not news
      this.toldReadOnly.add(v);
    }
    v.notify({ type: 'info', event: 'denied', message });
  }
}
