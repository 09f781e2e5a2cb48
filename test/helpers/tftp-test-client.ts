/**
 * TEST CLIENT — not for production. None of the installed clients (tftp-hpa 5.2, busybox
 * 1.35, curl 7.88) speaks RFC 7440 windowsize, so this one exists to exercise it, including
 * the loss paths:
 *  - in-order block → kept; an ACK after every `windowsize` blocks and after the last one;
 *  - a gap (block ahead of the expected one) → immediately ACK the last in-order block,
 *    once per gap, as RFC 7440 asks: the server must resume right after that block;
 *  - an old block at a window boundary (our ACK was lost) → re-ACK, as tftp-hpa does;
 *  - nothing for timeoutMs → ACK the last in-order block (or re-send the RRQ).
 * Fault hooks (`dropData`, `duplicateAcks`) inject the loss patterns deterministically.
 */
import dgram from 'node:dgram';
import { decode, encodeAck, encodeError, encodeRrq } from '../../src/boot/tftp/packet.js';

export interface TestGetOptions {
  /** Options sent in the RRQ (blksize, windowsize, tsize, timeout, or anything else). */
  options?: Record<string, string | number>;
  mode?: string;
  timeoutMs?: number;
  retries?: number;
  /** Return true to drop an incoming DATA packet (absolute block number, n-th time seen). */
  dropData?: (block: number, seen: number) => boolean;
  /** Send every ACK twice (provokes Sorcerer's Apprentice in a naive server). */
  duplicateAcks?: boolean;
  /**
   * RFC 1350 "dallying": after the final ACK, stay this long and re-ACK retransmissions, so a
   * lost final ACK doesn't leave the server timing out. Default 0 (like tftp-hpa).
   */
  dallyMs?: number;
}

export interface TestGetResult {
  data: Buffer;
  oack: Record<string, string> | null;
  serverPort: number;
  /** DATA packets received, including duplicates and dropped ones. */
  dataPackets: number;
  acksSent: number;
  gaps: number;
}

export class TftpClientError extends Error {
  constructor(
    public code: number,
    message: string,
  ) {
    super(message);
  }
}

export function tftpGet(host: string, port: number, file: string, o: TestGetOptions = {}): Promise<TestGetResult> {
  const timeoutMs = o.timeoutMs ?? 500;
  const maxRetries = o.retries ?? 10;
  const sock = dgram.createSocket('udp4');
  const chunks: Buffer[] = [];
  let serverPort: number | undefined;
  let oack: Record<string, string> | null = null;
  let blksize = 512;
  let windowsize = 1;
  let got = 0; // absolute number of the last in-order block
  let sinceAck = 0;
  let gapAckedAt = -1;
  let lastSent = encodeRrq(file, o.mode ?? 'octet', o.options ?? {});
  let retries = 0;
  const seen = new Map<number, number>();
  const res = { dataPackets: 0, acksSent: 0, gaps: 0 };

  return new Promise<TestGetResult>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let finished = false;
    const done = (err: Error | null): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve({ data: Buffer.concat(chunks), oack, serverPort: serverPort!, ...res });
    };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (++retries > maxRetries) return done(new Error(`test client: timed out at block ${got}`));
        if (serverPort === undefined) send(lastSent, port); // RRQ again
        else ack(); // RFC 7440: on timeout, ACK the last block received in order
      }, timeoutMs);
    };
    const send = (b: Buffer, to: number): void => {
      sock.send(b, to, host);
      arm();
    };
    const ack = (): void => {
      lastSent = encodeAck(got);
      sinceAck = 0;
      res.acksSent++;
      send(lastSent, serverPort!);
      if (o.duplicateAcks) sock.send(lastSent, serverPort!, host);
    };

    let dallying: NodeJS.Timeout | undefined;
    sock.on('message', (msg, rinfo) => {
      if (finished) return;
      if (dallying) {
        if (rinfo.port === serverPort) sock.send(lastSent, serverPort, host); // our final ACK was lost
        return;
      }
      if (serverPort === undefined) serverPort = rinfo.port;
      else if (rinfo.port !== serverPort) {
        sock.send(encodeError(5, 'Unknown transfer ID'), rinfo.port, rinfo.address);
        return;
      }
      const r = decode(msg);
      if (!r.ok) return;
      const p = r.packet;
      if (p.type === 'error') return done(new TftpClientError(p.code, p.message));
      if (p.type === 'oack') {
        if (got > 0) return;
        oack = { ...p.options };
        blksize = Number(p.options.blksize ?? 512);
        windowsize = Number(p.options.windowsize ?? 1);
        retries = 0;
        return ack(); // ACK 0
      }
      if (p.type !== 'data') return;
      res.dataPackets++;
      const expected = (got + 1) & 0xffff;
      const behind = (got - p.block) & 0xffff; // 0 = last in-order block again
      if (p.block === expected) {
        const abs = got + 1;
        const n = (seen.get(abs) ?? 0) + 1;
        seen.set(abs, n);
        if (o.dropData?.(abs, n)) return;
        chunks.push(Buffer.from(p.data));
        got = abs;
        retries = 0;
        if (p.data.length < blksize) {
          lastSent = encodeAck(got);
          res.acksSent++;
          clearTimeout(timer);
          // close only once the final ACK left
          sock.send(lastSent, serverPort, host, () => (o.dallyMs ? (dallying = setTimeout(() => done(null), o.dallyMs)) : done(null)));
          return;
        }
        if (++sinceAck >= windowsize) ack();
        else arm();
      } else if (behind < 0x8000) {
        // A block we have. At a window boundary it means our ACK was lost: say it again.
        // Mid-window it is a stray duplicate; re-ACKing would just make the server rewind.
        if (sinceAck === 0) ack();
      } else if (gapAckedAt !== got) {
        gapAckedAt = got; // a block went missing: tell the server where to resume, once
        res.gaps++;
        ack();
      }
    });
    sock.on('error', (e) => done(e));
    sock.bind(0, '127.0.0.1', () => send(lastSent, port));
  });
}

// ---- fixtures shared by the tftp test files ----

/** Files with random content in a fresh temp dir: name → content. */
export async function makeTree(sizes: Record<string, number>): Promise<{ dir: string; files: Map<string, Buffer> }> {
  const { mkdtemp, writeFile } = await import('node:fs/promises');
  const { randomBytes } = await import('node:crypto');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 'tftp-test-'));
  const files = new Map<string, Buffer>();
  for (const [name, size] of Object.entries(sizes)) {
    const b = randomBytes(size);
    await writeFile(join(dir, name), b);
    files.set(name, b);
  }
  return { dir, files };
}

/** Sends raw datagrams from one socket and collects what comes back. */
export class RawPeer {
  readonly sock = dgram.createSocket('udp4');
  readonly inbox: { msg: Buffer; port: number }[] = [];
  private waiters: (() => void)[] = [];
  /** `address`: the loopback address to send from (127.0.0.0/8: each one a different client to the server). */
  async open(address = '127.0.0.1'): Promise<this> {
    this.sock.on('message', (msg, r) => {
      this.inbox.push({ msg, port: r.port });
      this.waiters.splice(0).forEach((w) => w());
    });
    await new Promise<void>((r) => this.sock.bind(0, address, r));
    return this;
  }
  get port(): number {
    return this.sock.address().port;
  }
  send(b: Buffer, port: number): void {
    this.sock.send(b, port, '127.0.0.1');
  }
  /** Next datagram not yet taken, or an error after ms. */
  async next(ms = 3000): Promise<{ msg: Buffer; port: number }> {
    const deadline = Date.now() + ms;
    while (this.inbox.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('RawPeer: nothing received');
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.inbox.shift()!;
  }
  close(): Promise<void> {
    return new Promise((r) => this.sock.close(() => r()));
  }
}

/**
 * The engine the TFTP contract files test (vitest.config.ts runs them once per engine): `native` unless
 * the project says `js`. Named, never `auto`: a missing native build fails these files instead of
 * quietly testing the JavaScript engine twice.
 */
export const TFTP_ENGINE: 'native' | 'js' = process.env.TFTP_ENGINE === 'js' ? 'js' : 'native';
