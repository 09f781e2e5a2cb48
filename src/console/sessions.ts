import { join } from 'node:path';
import { Readable } from 'node:stream';
import { log } from '../log.js';
import { LeaseLogWriter, purgeLeaseLogFiles, readLeaseLog, type LeaseLogOptions } from './lease-log.js';
import { ReconnectingSource, type BackoffOptions } from './reconnect.js';
import { BoardSession } from './session.js';
import { openConsoleSource } from './sources.js';
import type { SerialBinding } from './serial-port.js';
import type { Connector, ConsoleState } from './source.js';

export interface ConsoleSessionsOptions {
  /** Lease logs go to `<dataDir>/console-logs/<leaseId>/`. */
  dataDir: string;
  /** Per-board scrollback replayed to late joiners (default 256 KiB). */
  scrollbackBytes?: number;
  /** Lease log rotation (defaults: 8 MiB per file, 3 rotated files kept). */
  log?: Partial<Pick<LeaseLogOptions, 'rotateBytes' | 'keep'>>;
  /** Baud rate of local devices whose board does not say (default 115200). */
  baudRate?: number;
  backoff?: BackoffOptions;
  binding?: SerialBinding;
  /** flock local devices (default true). */
  lock?: boolean;
}

/** What sessions need to know of a board: where its serial line is. */
export interface ConsoleBoard {
  id: string;
  serial?: string;
  baudRate?: number;
}

/**
 * One console session per board, opened when the server starts (so boot messages are never missed) and
 * kept for the server's lifetime; leases only switch which log file the output also goes to.
 */
export class ConsoleSessions {
  private readonly sessions = new Map<string, BoardSession>();
  /** Sessions on something other than a board's serial line (a container's TTY): sync() leaves them alone. */
  private readonly attached = new Set<string>();
  private readonly logOptions: LeaseLogOptions;

  constructor(private readonly o: ConsoleSessionsOptions) {
    this.logOptions = { dir: join(o.dataDir, 'console-logs'), rotateBytes: o.log?.rotateBytes ?? 8 << 20, keep: o.log?.keep ?? 3 };
  }

  /** Opens the board's session, or reopens it if its line changed; a board without a line has none. */
  async ensure(board: ConsoleBoard): Promise<BoardSession | undefined> {
    const cur = this.sessions.get(board.id);
    const serial = board.serial;
    if (cur && cur.serial === serial) return cur;
    let leaseId: string | undefined;
    if (cur) {
      leaseId = cur.leaseId;
      await this.remove(board.id, 'serial line changed');
    }
    if (!serial) return undefined;
    const source = openConsoleSource(serial, { baudRate: board.baudRate ?? this.o.baudRate, backoff: this.o.backoff, binding: this.o.binding, lock: this.o.lock });
    const session = new BoardSession(board.id, serial, source, this.o.scrollbackBytes ?? 256 * 1024);
    session.on('state', (st) => log.info({ board: board.id, console: st.state, error: st.lastError }, 'console line state'));
    this.sessions.set(board.id, session);
    if (leaseId) await this.startLeaseLog(board.id, leaseId);
    return session;
  }

  /**
   * A session on any line a Connector reaches (a container's TTY), with the same scrollback, fan-out,
   * reconnects and lease logs as a board's serial line.
   */
  async attach(id: string, connector: Connector): Promise<BoardSession> {
    const cur = this.sessions.get(id);
    if (cur) return cur;
    const session = new BoardSession(id, connector.target, new ReconnectingSource(connector, this.o.backoff), this.o.scrollbackBytes ?? 256 * 1024);
    this.sessions.set(id, session);
    this.attached.add(id);
    return session;
  }

  /** Matches sessions to the inventory: opens new ones, reopens changed ones, closes those of removed boards. */
  async sync(boards: ConsoleBoard[]): Promise<void> {
    const ids = new Set(boards.map((b) => b.id));
    for (const id of [...this.sessions.keys()]) if (!ids.has(id) && !this.attached.has(id)) await this.remove(id, 'board removed');
    for (const b of boards) await this.ensure(b);
  }

  clearScrollback(id: string): void {
    this.sessions.get(id)?.clearScrollback();
  }

  get(boardId: string): BoardSession | undefined {
    return this.sessions.get(boardId);
  }

  async remove(boardId: string, reason = 'board removed'): Promise<void> {
    const s = this.sessions.get(boardId);
    this.sessions.delete(boardId);
    this.attached.delete(boardId);
    await s?.close(reason);
  }

  /** Per-board console state for the API (`GET /v1/boards/:id` can embed `states()[id]`). */
  states(): Record<string, ConsoleState & { viewers: number; leaseId?: string }> {
    return Object.fromEntries([...this.sessions].map(([id, s]) => [id, { ...s.state(), viewers: s.viewerList().length, leaseId: s.leaseId }]));
  }

  state(boardId: string): ConsoleState | undefined {
    return this.sessions.get(boardId)?.state();
  }

  /** From now on the board's output is also appended to this lease's log (call when the lease starts provisioning). */
  async startLeaseLog(boardId: string, leaseId: string): Promise<void> {
    const s = this.sessions.get(boardId);
    if (!s) throw new Error(`board ${boardId} has no console session`);
    if (s.leaseId === leaseId) return;
    const writer = LeaseLogWriter.open(leaseId, this.logOptions);
    await s.setLeaseLog({ leaseId, writer })?.writer.close();
  }

  /** Stops logging for the lease; its files stay readable until purged. */
  async stopLeaseLog(leaseId: string): Promise<void> {
    for (const s of this.sessions.values()) {
      if (s.leaseId === leaseId) await s.setLeaseLog()?.writer.close();
    }
  }

  /** Deletes the lease's log (on release). */
  async purgeLeaseLog(leaseId: string): Promise<void> {
    await this.stopLeaseLog(leaseId);
    await purgeLeaseLogFiles(this.logOptions.dir, leaseId);
  }

  /**
   * The lease's log, oldest byte first, including output still on its way to disk; null if it has none.
   * A lease being logged whose board has printed nothing yet has an empty log (its file comes with the first byte).
   */
  async leaseLog(leaseId: string): Promise<Readable | null> {
    let logging = false;
    for (const s of this.sessions.values()) {
      if (s.leaseId !== leaseId) continue;
      logging = true;
      await s.leaseLogIdle();
    }
    return (await readLeaseLog(this.logOptions.dir, leaseId, this.logOptions.keep)) ?? (logging ? Readable.from([]) : null);
  }

  async close(): Promise<void> {
    for (const id of [...this.sessions.keys()]) await this.remove(id, 'server stopping');
  }
}
