/**
 * Read-only TFTP server: RFC 1350, option negotiation (RFC 2347) with blksize (2348),
 * tsize + timeout (2349) and windowsize (7440). One UDP socket per transfer, go-back-N
 * retransmission driven only by the timer (duplicate ACKs never trigger resends).
 */
import dgram from 'node:dgram';
import dns from 'node:dns';
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import { log } from '../../log.js';
import { decode, encodeError, encodeOack, ErrorCode, Opcode, type TftpOptions } from './packet.js';
import { loadPump, Pump, pumpUnavailable, type PumpTransfer } from './pump.js';

export interface TftpClient {
  address: string;
  port: number;
}
export interface TftpFile {
  stream: NodeJS.ReadableStream | Readable;
  /** Known size → answered as tsize in the OACK. */
  size?: number;
  /**
   * The same content for the native engine (src/boot/tftp/pump.ts), with `size`: the bytes, or the
   * stream's open descriptor (read with pread; closed with the stream when the transfer ends).
   */
  bytes?: Buffer;
  fd?: number;
}
/** Resolves null for "File not found"; throw TftpError to send a specific error code. */
export type TftpHandler = (path: string, client: TftpClient) => Promise<TftpFile | null>;

export class TftpError extends Error {
  constructor(
    public code: number,
    message: string,
  ) {
    super(message);
    this.name = 'TftpError';
  }
}

export interface TransferEvent {
  client: TftpClient;
  path: string;
  ok: boolean;
  /** Payload bytes the client acknowledged. */
  bytes: number;
  ms: number;
  blksize: number;
  windowsize: number;
  error?: string;
}

export interface TftpServerOptions {
  address: string;
  port: number;
  handler: TftpHandler;
  maxTransfers?: number;
  /** Transfers one client address may hold at once; more wait their turn (default 4). */
  maxPerClient?: number;
  /** Requests waiting for a slot (default 1024); beyond, new ones are dropped and the client retransmits. */
  maxWaiting?: number;
  /** The largest RFC 2349 `timeout` (s) a client may choose; a larger one is ignored (default 5). */
  maxClientTimeoutS?: number;
  timeoutMs?: number;
  retries?: number;
  maxBlksize?: number;
  maxWindowsize?: number;
  onTransfer?: (ev: TransferEvent) => void;
  /**
   * Who moves the data once a transfer is decided: `native`, a C thread (src/boot/tftp/pump.ts; files
   * with bytes or a descriptor); `js`, this event loop. `auto` (default): native when it is built;
   * otherwise js with a warning, or an error under CI=true, where a missing build is a failure.
   */
  engine?: 'auto' | 'native' | 'js';
}

export interface TftpStats {
  /** Well-formed RRQs received (retransmitted duplicates included). */
  rrq: number;
  /** Undecodable packets, dropped. */
  malformed: number;
  completed: number;
  /** Transfers that started (handler called) but did not complete: not found, timeouts, client errors... */
  failed: number;
  active: number;
  /** Requests answered with an error without starting a transfer: WRQ, unsupported mode. */
  refused: number;
  /** Requests that waited for a slot (overload delays a boot, it never refuses one). */
  delayed: number;
  waiting: number;
}

const MAX_BLKSIZE = 65464; // RFC 2348 upper bound
const DEFAULTS = { engine: 'auto' as const, maxTransfers: 128, maxPerClient: 4, maxWaiting: 1024, maxClientTimeoutS: 5, timeoutMs: 1000, retries: 5, maxBlksize: MAX_BLKSIZE, maxWindowsize: 64 };
/** A waiting request older than this is forgotten: its client has retransmitted (and is waiting again) or given up. */
const WAIT_MS = 30_000;
const log_ = log.child({ mod: 'tftp' });

/**
 * Node resolves even IP literals through dns.lookup, which costs a process.nextTick per
 * datagram sent; answering literals synchronously keeps the per-packet path short.
 */
function fastLookup(
  host: string,
  opts: dns.LookupOneOptions,
  cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  const family = isIP(host);
  if (family) cb(null, host, family);
  else dns.lookup(host, opts, cb);
}

function udpSocket(address: string): dgram.Socket {
  return dgram.createSocket({ type: isIP(address) === 6 ? 'udp6' : 'udp4', lookup: fastLookup });
}

function bind(sock: dgram.Socket, address: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    const onClose = (): void => reject(new Error('socket closed while binding'));
    sock.once('error', onError);
    sock.once('close', onClose);
    sock.bind(port, address, () => {
      sock.off('error', onError);
      sock.off('close', onClose);
      resolve();
    });
  });
}

const positiveInt = (v: string | undefined): number => (v !== undefined && /^\d{1,10}$/.test(v) ? Number(v) : NaN);

/**
 * Buffers the handler's stream and cuts it into DATA packets. Reads ahead up to `highWater`
 * bytes, then pauses the stream: big files never sit in memory whole.
 */
class BlockSource {
  private chunks: Buffer[] = [];
  private off = 0; // read position inside chunks[0]
  private avail = 0;
  private ended = false;
  private paused = false;
  private wake: (() => void) | undefined;
  error: Error | undefined;

  constructor(
    private readonly stream: TftpFile['stream'],
    private readonly blksize: number,
    private readonly highWater: number,
  ) {
    stream.on('data', this.onData);
    stream.once('end', this.onEnd);
    stream.once('error', this.onError);
  }

  private onData = (c: Buffer | string): void => {
    const b = typeof c === 'string' ? Buffer.from(c) : c;
    if (b.length === 0) return;
    this.chunks.push(b);
    this.avail += b.length;
    if (!this.paused && this.avail >= this.highWater) {
      this.paused = true;
      this.stream.pause();
    }
    this.notify();
  };
  private onEnd = (): void => {
    this.ended = true;
    this.notify();
  };
  private onError = (e: Error): void => {
    this.error = e;
    this.notify();
  };
  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Calls cb once when more data, the end or an error arrives. */
  onReady(cb: () => void): void {
    this.wake = cb;
  }

  /**
   * The DATA packet for `block`, or undefined until enough is buffered. A payload shorter
   * than blksize (possibly empty, for exact multiples) is the final block.
   */
  take(block: number): Buffer | undefined {
    if (this.error || (this.avail < this.blksize && !this.ended)) return undefined;
    const n = Math.min(this.blksize, this.avail);
    const pkt = Buffer.allocUnsafe(4 + n);
    pkt.writeUInt16BE(Opcode.DATA, 0);
    pkt.writeUInt16BE(block & 0xffff, 2); // rolls over to 0 after 65535, like tftp-hpa and U-Boot expect
    let w = 4;
    while (w < pkt.length) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length - this.off, pkt.length - w);
      c.copy(pkt, w, this.off, this.off + k);
      w += k;
      this.off += k;
      if (this.off === c.length) {
        this.chunks.shift();
        this.off = 0;
      }
    }
    this.avail -= n;
    if (this.paused && this.avail < this.highWater / 2) {
      this.paused = false;
      this.stream.resume();
    }
    return pkt;
  }

  close(): void {
    this.stream.off('data', this.onData);
    this.stream.off('end', this.onEnd);
    this.stream.off('error', this.onError);
    this.stream.on('error', () => {}); // a late error after we stopped listening must not crash the process
    destroyStream(this.stream);
    this.chunks = [];
    this.wake = undefined;
  }
}

function destroyStream(s: TftpFile['stream']): void {
  const d = (s as { destroy?: () => void }).destroy;
  if (typeof d === 'function') d.call(s);
}

interface Negotiated {
  blksize: number;
  windowsize: number;
  timeoutMs: number;
  oack: Record<string, string> | null;
}

let nextPumpId = 1;

class Transfer {
  readonly t0 = performance.now();
  /** Set once the client ACKed something: a later RRQ from the same port is a new request. */
  progressed = false;
  private phase: 'init' | 'oack' | 'data' | 'done' = 'init';
  private sock: dgram.Socket | undefined;
  private source: BlockSource | undefined;
  private oackPkt: Buffer | undefined;
  private window: Buffer[] = []; // unacknowledged DATA packets, window[0] is block `base`
  private base = 1; // absolute (non-wrapping) block number
  private sentTo = 0; // highest absolute block sent so far
  private nextSend = 0; // index in window of the next packet to (re)send
  private lastBlock = -1; // absolute number of the final block once it has been read
  private retries = 0;
  private timer: NodeJS.Timeout | undefined;
  private bytes = 0;
  private neg: Negotiated;
  private bound = false;
  /** Set while the native engine runs the transfer: its id there, and the file to close at the end. */
  private native: { id: number; file: TftpFile } | undefined;
  private closeResolve!: () => void;
  /** Resolves once the transfer socket is closed (stop() waits for it). */
  readonly closed = new Promise<void>((r) => (this.closeResolve = r));

  constructor(
    private readonly srv: TftpServer,
    readonly client: TftpClient,
    readonly path: string,
    private readonly reqOptions: TftpOptions,
  ) {
    this.neg = { blksize: 512, windowsize: 1, timeoutMs: srv.opts.timeoutMs, oack: null };
  }

  async run(): Promise<void> {
    const sock = udpSocket(this.srv.opts.address);
    this.sock = sock;
    // A transfer socket error is a lost packet at worst: the retransmission timer covers it.
    sock.on('error', (e) => log_.debug({ err: e, client: this.client }, 'transfer socket error'));
    // A handler that never answers must not hold a transfer slot forever.
    const { timeoutMs, retries } = this.srv.opts;
    const guard = setTimeout(() => this.fail(ErrorCode.NOT_DEFINED, 'Handler timed out'), timeoutMs * (retries + 1));
    guard.unref(); // a handler still hanging when the server stops must not keep the process alive
    const [fileR, bindR] = await Promise.allSettled([
      Promise.resolve().then(() => this.srv.opts.handler(this.path, this.client)),
      bind(sock, this.srv.opts.address, 0).then(() => void (this.bound = true)),
    ]);
    clearTimeout(guard);
    const file = fileR.status === 'fulfilled' ? fileR.value : null;
    if (this.phase === 'done' || bindR.status === 'rejected') {
      // aborted (server stopping, superseded, handler too slow) while the handler ran, or no socket
      if (file) destroyStream(file.stream);
      if (this.phase === 'done') return;
      this.srv.replyFromListener(this.client, ErrorCode.NOT_DEFINED, 'Server error');
      return this.finish(false, `bind: ${(bindR as PromiseRejectedResult).reason}`);
    }
    sock.on('message', (m, r) => this.onMessage(m, r));
    if (fileR.status === 'rejected') {
      const e = fileR.reason as unknown;
      if (e instanceof TftpError) return this.fail(e.code, e.message);
      log_.error({ err: e, path: this.path }, 'tftp handler failed');
      return this.fail(ErrorCode.NOT_DEFINED, 'Internal error');
    }
    if (!file) return this.fail(ErrorCode.FILE_NOT_FOUND, 'File not found');

    this.neg = this.negotiate(file.size);
    const pump = this.srv.dataEngine;
    const direct = file.bytes ? { bytes: file.bytes } : file.fd !== undefined ? { fd: file.fd } : undefined;
    if (pump && direct && file.size !== undefined) return this.runNative(pump, file, direct, file.size);
    const { blksize, windowsize } = this.neg;
    // Two windows ahead, at least 64 KiB: enough to never wait on the page cache, small enough for 1,000 at once.
    this.source = new BlockSource(file.stream, blksize, Math.min(8 << 20, Math.max(64 << 10, 2 * blksize * windowsize)));
    if (this.neg.oack) {
      this.phase = 'oack';
      this.oackPkt = encodeOack(this.neg.oack);
      this.sendRaw(this.oackPkt);
      this.arm();
    } else {
      this.phase = 'data';
      this.pump();
    }
  }

  /** Hands the decided transfer to the native engine; this socket only served errors before that. */
  private runNative(pump: Pump, file: TftpFile, source: PumpTransfer['source'], size: number): void {
    const id = nextPumpId++;
    try {
      pump.start(
        {
          id,
          bind: this.srv.opts.address,
          peer: this.client.address,
          port: this.client.port,
          source,
          size,
          ...(this.neg.oack ? { oack: encodeOack(this.neg.oack) } : {}),
          blksize: this.neg.blksize,
          windowsize: this.neg.windowsize,
          timeoutMs: this.neg.timeoutMs,
          retries: this.srv.opts.retries,
        },
        (r) => {
          this.bytes = r.bytes;
          this.srv.stats.malformed += r.malformed;
          this.finish(r.ok, r.error);
        },
      );
    } catch (e) {
      destroyStream(file.stream);
      log_.error({ err: e, client: this.client }, 'tftp native engine refused a transfer');
      return this.fail(ErrorCode.NOT_DEFINED, 'Server error');
    }
    this.native = { id, file };
    this.phase = 'data';
    const s = this.sock;
    this.sock = undefined;
    this.bound = false;
    s?.close(); // `closed` resolves when the engine reports the end
  }

  private negotiate(size: number | undefined): Negotiated {
    const o = this.srv.opts;
    const req = this.reqOptions;
    const oack: Record<string, string> = {};
    let blksize = 512;
    let windowsize = 1;
    let timeoutMs = o.timeoutMs;
    const b = positiveInt(req.blksize);
    if (b >= 8) oack.blksize = String((blksize = Math.min(b, o.maxBlksize)));
    const w = positiveInt(req.windowsize);
    if (w >= 1 && w <= 65535) oack.windowsize = String((windowsize = Math.min(w, o.maxWindowsize)));
    const t = positiveInt(req.timeout);
    // A client-chosen timeout above our bound is ignored (RFC 2349 lets the server decline it): one client
    // must not hold a slot for minutes by stalling with a 255 s timeout.
    if (t >= 1 && t <= Math.min(255, o.maxClientTimeoutS)) {
      timeoutMs = t * 1000;
      oack.timeout = String(t);
    }
    // Unknown size → no tsize in the OACK (RFC 2349 allows that). Size 0 is left out too:
    // curl 7.x/8.x rejects "tsize 0" in an OACK as illegal (tftp-hpa's server trips it too);
    // the empty first DATA says the same thing.
    if (req.tsize !== undefined && size) oack.tsize = String(size);
    // Anything else (utimeout, rollover, typos) is ignored as RFC 2347 says.
    return { blksize, windowsize, timeoutMs, oack: Object.keys(oack).length ? oack : null };
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (rinfo.port !== this.client.port || rinfo.address !== this.client.address) {
      // RFC 1350: a stranger gets ERROR 5; our transfer carries on undisturbed
      this.sock?.send(UNKNOWN_TID, rinfo.port, rinfo.address);
      return;
    }
    if (msg.length === 4 && msg[0] === 0 && msg[1] === Opcode.ACK) return this.onAck(msg.readUInt16BE(2)); // hot path
    const r = decode(msg);
    if (!r.ok) {
      this.srv.stats.malformed++;
      return;
    }
    if (r.packet.type === 'error') this.finish(false, `client error ${r.packet.code}: ${r.packet.message}`);
    // DATA/RRQ/WRQ/OACK from the client make no sense on a read transfer: ignore them.
  }

  private onAck(n: number): void {
    if (this.phase === 'oack') {
      if (n !== 0) return;
      this.phase = 'data';
      this.progressed = true;
      this.retries = 0;
      return this.pump();
    }
    if (this.phase !== 'data') return;
    // Distance from the last block the client had already acknowledged, modulo 2^16.
    const d = (n - this.base + 1) & 0xffff;
    // d === 0: a repeated ACK (lost DATA, or a duplicate): only the timer retransmits, so a
    // duplicated ACK can never double the traffic (Sorcerer's Apprentice). Beyond sentTo: stale.
    if (d === 0 || d > this.sentTo - this.base + 1) return;
    for (let i = 0; i < d; i++) this.bytes += this.window[i]!.length - 4;
    if (d === 1) this.window.shift();
    else this.window.splice(0, d);
    this.base += d;
    this.progressed = true;
    this.retries = 0;
    if (this.lastBlock >= 0 && this.base > this.lastBlock) return this.finish(true);
    // An ACK inside the window means the blocks after it were lost: resume right after it.
    this.nextSend = 0;
    this.pump();
  }

  /** Sends the window from `nextSend`, reading new blocks as the stream provides them. */
  private pump(): void {
    if (this.phase !== 'data') return;
    const sock = this.sock!;
    const { port, address } = this.client;
    let sent = false;
    while (this.nextSend < this.neg.windowsize) {
      let pkt = this.window[this.nextSend];
      if (pkt === undefined) {
        if (this.lastBlock >= 0) break;
        pkt = this.source!.take(this.base + this.window.length);
        if (pkt === undefined) {
          if (this.source!.error) return this.fail(ErrorCode.NOT_DEFINED, 'Read error');
          this.source!.onReady(this.pumpLater);
          break;
        }
        this.window.push(pkt);
        if (pkt.length - 4 < this.neg.blksize) this.lastBlock = this.base + this.window.length - 1;
      }
      sock.send(pkt, port, address);
      this.nextSend++;
      if (this.base + this.nextSend - 1 > this.sentTo) this.sentTo = this.base + this.nextSend - 1;
      sent = true;
    }
    // The timer restarts only when something went out; while waiting for a slow stream it
    // keeps running, so a stalled source fails the transfer instead of holding a slot forever.
    if (sent || !this.timer) this.arm();
  }

  private pumpLater = (): void => this.pump();

  private arm(): void {
    if (this.timer) this.timer.refresh();
    else this.timer = setTimeout(this.onTimeout, this.neg.timeoutMs);
  }

  private onTimeout = (): void => {
    if (this.phase === 'done') return;
    if (++this.retries > this.srv.opts.retries) return this.fail(ErrorCode.NOT_DEFINED, 'Transfer timed out');
    if (this.phase === 'oack') this.sendRaw(this.oackPkt!);
    else {
      this.nextSend = 0; // go back N: resend the whole unacknowledged window
      this.pump();
    }
    if (!this.over) this.arm(); // pump() may have failed the transfer
  };

  private get over(): boolean {
    return this.phase === 'done';
  }

  private sendRaw(b: Buffer): void {
    this.sock?.send(b, this.client.port, this.client.address);
  }

  /** Tells the client, then ends the transfer as failed. */
  fail(code: number, message: string): void {
    if (this.phase === 'done') return;
    if (this.native) return this.srv.dataEngine?.cancel(this.native.id, code, message); // it reports the end
    const sock = this.bound ? this.sock : undefined; // unbound: nobody to tell yet
    this.finish(false, message, !sock);
    // close only after the ERROR left: closing cancels queued sends
    sock?.send(encodeError(code, message), this.client.port, this.client.address, () => this.closeSocket());
  }

  private closeSocket(): void {
    const s = this.sock;
    this.sock = undefined;
    if (!s) return this.closeResolve();
    try {
      s.close(() => this.closeResolve());
    } catch {
      this.closeResolve();
    }
  }

  finish(ok: boolean, error?: string, closeSock = true): void {
    if (this.phase === 'done') return;
    this.phase = 'done';
    clearTimeout(this.timer);
    this.source?.close();
    if (this.native) destroyStream(this.native.file.stream); // closes the descriptor the engine read
    this.window = [];
    if (closeSock) this.closeSocket();
    this.srv.finished(this, {
      client: this.client,
      path: this.path,
      ok,
      bytes: this.bytes,
      ms: Math.round(performance.now() - this.t0),
      blksize: this.neg.blksize,
      windowsize: this.neg.windowsize,
      ...(error === undefined ? {} : { error }),
    });
  }
}

let warned = false;
const UNKNOWN_TID = encodeError(ErrorCode.UNKNOWN_TID, 'Unknown transfer ID');

export class TftpServer {
  readonly stats: TftpStats = { rrq: 0, malformed: 0, completed: 0, failed: 0, active: 0, refused: 0, delayed: 0, waiting: 0 };
  /** @internal */
  readonly opts: Required<Omit<TftpServerOptions, 'onTransfer'>> & Pick<TftpServerOptions, 'onTransfer'>;
  /** @internal the native engine, when this server uses it */
  dataEngine: Pump | undefined;
  private sock: dgram.Socket | undefined;
  private readonly transfers = new Map<string, Transfer>();
  /** Active transfers per client address (the per-client bound). */
  private readonly perClient = new Map<string, number>();
  /** Requests waiting for a slot, oldest first, one per client address and port. */
  private readonly waiting = new Map<string, { client: { address: string; port: number }; filename: string; options: Record<string, string>; at: number }>();
  private readonly all = new Set<Transfer>();
  private stopping = false;

  constructor(o: TftpServerOptions) {
    const clamp = (v: number, lo: number, hi: number): number => Math.max(lo, Math.min(hi, Math.floor(v)));
    this.opts = {
      ...DEFAULTS,
      ...o,
      maxBlksize: clamp(o.maxBlksize ?? DEFAULTS.maxBlksize, 8, MAX_BLKSIZE),
      // ≤ 32768 keeps every window shorter than half the 16-bit block space, so ACKs map unambiguously
      maxWindowsize: clamp(o.maxWindowsize ?? DEFAULTS.maxWindowsize, 1, 32768),
    };
  }

  /** Which engine start() chose. */
  get engine(): 'native' | 'js' {
    return this.dataEngine ? 'native' : 'js';
  }

  async start(): Promise<void> {
    const addon = this.opts.engine === 'js' ? null : loadPump();
    if (!addon && this.opts.engine !== 'js') {
      const why = `the native TFTP engine is unavailable: ${pumpUnavailable()}`;
      if (this.opts.engine === 'native' || process.env.CI === 'true') throw new Error(why);
      if (!warned) log_.warn(`${why}; serving from the JavaScript engine (slower in lockstep)`);
      warned = true;
    }
    const sock = udpSocket(this.opts.address);
    await bind(sock, this.opts.address, this.opts.port);
    try {
      sock.setRecvBufferSize(1 << 20); // absorb RRQ bursts (PXE storms); the kernel caps it at rmem_max
    } catch {
      /* best effort */
    }
    sock.on('error', (e) => log_.warn({ err: e }, 'tftp listener socket error'));
    sock.on('message', (m, r) => this.onRequest(m, r));
    this.sock = sock;
    this.stopping = false;
    this.dataEngine = addon ? new Pump(addon) : undefined;
    log_.info({ ...this.address(), engine: this.engine }, 'tftp server listening');
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.waiting.clear();
    const sock = this.sock;
    this.sock = undefined;
    if (sock) await new Promise<void>((r) => sock.close(() => r()));
    const pending = [...this.all];
    for (const t of pending) t.fail(ErrorCode.NOT_DEFINED, 'Server shutting down');
    // Bounded: a shutdown must not hang on a socket that never reports closing.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(pending.map((t) => t.closed)), new Promise((r) => (timer = setTimeout(r, 2000)))]);
    clearTimeout(timer);
    this.dataEngine?.close(); // ends whatever did not report in time; its reports still arrive
    this.dataEngine = undefined;
  }

  address(): { address: string; port: number } {
    if (!this.sock) throw new Error('tftp server not started');
    const a = this.sock.address();
    return { address: a.address, port: a.port };
  }

  /** @internal */
  replyFromListener(to: TftpClient, code: number, message: string): void {
    this.sock?.send(encodeError(code, message), to.port, to.address);
  }

  private onRequest(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const r = decode(msg);
    if (!r.ok) {
      this.stats.malformed++;
      return;
    }
    const p = r.packet;
    const client = { address: rinfo.address, port: rinfo.port };
    if (p.type === 'wrq') {
      this.stats.refused++;
      return this.replyFromListener(client, ErrorCode.ACCESS_VIOLATION, 'Read-only server');
    }
    if (p.type !== 'rrq' || this.stopping) return; // stray DATA/ACK/ERROR/OACK on the listening port
    this.stats.rrq++;
    const key = `${rinfo.address} ${rinfo.port}`;
    const existing = this.transfers.get(key);
    if (existing) {
      // Retransmitted RRQ (our first reply was lost or is slow): the transfer's own timer answers it.
      if (!existing.progressed && existing.path === p.filename) return;
      existing.fail(ErrorCode.NOT_DEFINED, 'Superseded by a new request'); // client restarted from the same port
    }
    // netascii is served as octet (no CR/LF translation): boot images are binary and
    // every boot client asks for octet; translating would also break tsize.
    if (p.mode !== 'octet' && p.mode !== 'netascii') {
      this.stats.refused++;
      return this.replyFromListener(client, ErrorCode.ILLEGAL_OPERATION, `Unsupported mode ${p.mode}`);
    }
    // Overload delays, it never refuses: past the global or the per-client bound the request waits for a
    // slot (its client's retransmissions find it still waiting), and starts when one frees, oldest first.
    if (!this.hasSlot(client.address)) {
      if (!this.waiting.has(key)) {
        if (this.waiting.size >= this.opts.maxWaiting) return; // the client retransmits; nothing grows without bound
        this.stats.delayed++;
      }
      this.waiting.delete(key);
      this.waiting.set(key, { client, filename: p.filename, options: p.options, at: Date.now() });
      this.stats.waiting = this.waiting.size;
      return;
    }
    this.waiting.delete(key);
    this.stats.waiting = this.waiting.size;
    this.begin(key, client, p.filename, p.options);
  }

  private hasSlot(address: string): boolean {
    return this.stats.active < this.opts.maxTransfers && (this.perClient.get(address) ?? 0) < this.opts.maxPerClient;
  }

  private begin(key: string, client: { address: string; port: number }, filename: string, options: Record<string, string>): void {
    const t = new Transfer(this, client, filename, options);
    this.transfers.set(key, t);
    this.all.add(t);
    this.stats.active++;
    this.perClient.set(client.address, (this.perClient.get(client.address) ?? 0) + 1);
    t.run().catch((e: unknown) => {
      log_.error({ err: e }, 'tftp transfer crashed');
      t.finish(false, 'internal error');
    });
  }

  /** A slot freed: start the oldest waiting requests that fit (their client's own bound included). */
  private startWaiting(): void {
    const now = Date.now();
    for (const [key, w] of this.waiting) {
      if (this.stats.active >= this.opts.maxTransfers || this.stopping) break;
      if (now - w.at > WAIT_MS) {
        this.waiting.delete(key);
        continue;
      }
      if (!this.hasSlot(w.client.address) || this.transfers.has(key)) continue;
      this.waiting.delete(key);
      this.begin(key, w.client, w.filename, w.options);
    }
    this.stats.waiting = this.waiting.size;
  }

  /** @internal called exactly once per transfer */
  finished(t: Transfer, ev: TransferEvent): void {
    const key = `${t.client.address} ${t.client.port}`;
    if (this.transfers.get(key) === t) this.transfers.delete(key);
    this.all.delete(t);
    this.stats.active--;
    const n = (this.perClient.get(t.client.address) ?? 1) - 1;
    if (n > 0) this.perClient.set(t.client.address, n);
    else this.perClient.delete(t.client.address);
    queueMicrotask(() => this.startWaiting());
    if (ev.ok) this.stats.completed++;
    else this.stats.failed++;
    log_.debug(ev, 'tftp transfer finished');
    try {
      this.opts.onTransfer?.(ev);
    } catch (e) {
      log_.warn({ err: e }, 'onTransfer callback threw');
    }
  }
}
