/**
 * The native TFTP data engine (native/tftp-pump/pump.c): once JavaScript has decided a transfer (who
 * asked, what the path means, which options hold), one C thread per server moves its bytes to the
 * client and retransmits, off this event loop and out of Node's per-datagram path. Built by
 * scripts/build-native.sh (node-gyp, no download); without it the server uses its JavaScript engine.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export interface PumpResult {
  id: number;
  ok: boolean;
  /** Payload bytes the client acknowledged. */
  bytes: number;
  retransmits: number;
  /** Undecodable packets from the client on the transfer's port. */
  malformed: number;
  /** Packets from anyone but the client (answered with ERROR 5). */
  strangers: number;
  error?: string;
}

export interface PumpTransfer {
  id: number;
  /** Local address for the transfer's own socket (a new port: its TID). */
  bind: string;
  peer: string;
  port: number;
  /** The source: bytes held until the transfer ends, or an open descriptor read with pread. */
  source: { bytes: Buffer } | { fd: number };
  size: number;
  /** Sent first, until the client's ACK 0; without it the transfer starts with DATA 1. */
  oack?: Buffer;
  blksize: number;
  windowsize: number;
  timeoutMs: number;
  retries: number;
}

interface Addon {
  open(onDone: (r: PumpResult) => void): unknown;
  start(engine: unknown, t: Record<string, unknown>): number;
  cancel(engine: unknown, id: number, code: number, message: string): void;
  hold(engine: unknown, on: boolean): void;
  close(engine: unknown): void;
}

export const ADDON_PATH = fileURLToPath(new URL('../../../native/tftp-pump/build/Release/tftp_pump.node', import.meta.url));

let addon: Addon | null | undefined;
let loadError: string | undefined;

/** The addon, or null with the reason in pumpUnavailable(). */
export function loadPump(): Addon | null {
  if (addon !== undefined) return addon;
  try {
    if (!existsSync(ADDON_PATH)) throw new Error(`${ADDON_PATH} is missing (run scripts/build-native.sh)`);
    addon = createRequire(import.meta.url)(ADDON_PATH) as Addon;
  } catch (e) {
    loadError = (e as Error).message;
    addon = null;
  }
  return addon;
}

export function pumpUnavailable(): string | undefined {
  loadPump();
  return loadError;
}

/** One server's engine: a C thread and its sockets; close() ends what still runs ("Server shutting down"). */
export class Pump {
  private readonly engine: unknown;
  private readonly live = new Map<number, { done: (r: PumpResult) => void; keep: PumpTransfer['source'] }>();
  private closed = false;

  constructor(private readonly a: Addon) {
    this.engine = a.open((r) => this.onDone(r));
  }

  /** Starts a transfer; `done` is called once, on this thread. Returns the transfer socket's port. */
  start(t: PumpTransfer, done: (r: PumpResult) => void): number {
    if (this.closed) throw new Error('tftp pump closed');
    const { source, size, ...rest } = t;
    const port = this.a.start(this.engine, {
      ...rest,
      ...('bytes' in source ? { buf: source.bytes } : { fd: source.fd }),
      sizeLo: size % 2 ** 32,
      sizeHi: Math.floor(size / 2 ** 32),
      ...(t.oack ? { oack: t.oack } : {}),
    });
    if (this.live.size === 0) this.a.hold(this.engine, true); // a running transfer keeps the thread's loop alive
    this.live.set(t.id, { done, keep: source }); // `keep`: the bytes stay referenced until the engine is done with them
    return port;
  }

  /** Ends a transfer: the client gets ERROR code/message, `done` reports it failed. */
  cancel(id: number, code: number, message: string): void {
    if (!this.closed && this.live.has(id)) this.a.cancel(this.engine, id, code, message);
  }

  get active(): number {
    return this.live.size;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.a.close(this.engine);
  }

  private onDone(r: PumpResult): void {
    const t = this.live.get(r.id);
    if (!t) return;
    this.live.delete(r.id);
    if (this.live.size === 0 && !this.closed) this.a.hold(this.engine, false);
    t.done(r);
  }
}
