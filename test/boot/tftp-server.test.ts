/** Protocol behaviour, checked packet by packet with raw sockets and the RFC 7440 test client. */
import { mkdir, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { fsHandler } from '../../src/boot/tftp/fs-handler.js';
import { decode, encodeAck, encodeError, encodeRrq, encodeWrq, type Packet } from '../../src/boot/tftp/packet.js';
import { TftpError, TftpServer, type TftpHandler, type TftpServerOptions, type TransferEvent } from '../../src/boot/tftp/server.js';
import { makeTree, RawPeer, tftpGet, TFTP_ENGINE } from '../helpers/tftp-test-client.js';

const SIZES = { small: 3000, s512: 512, f5m: 5 * 1024 * 1024 + 7, big: 65535 * 512 + 300_000, b200: 200 * 512 + 100 };
let files: Map<string, Buffer>;
let root: string;

beforeAll(async () => {
  ({ files, dir: root } = await makeTree(SIZES));
  await symlink('/etc/passwd', join(root, 'passwd-link'));
  await mkdir(join(root, 'sub'));
});
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

const servers: TftpServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

const realSetTimeout = globalThis.setTimeout; // for the test that fakes timers
/** Rejects after ms with a message that says what never happened. */
function deadline(ms: number, what: string): Promise<never> {
  return new Promise((_, reject) => realSetTimeout(() => reject(new Error(`${what} (waited ${ms} ms)`)), ms).unref());
}

async function start(o: Partial<TftpServerOptions> = {}) {
  const events: TransferEvent[] = [];
  let wake = (): void => {};
  const server = new TftpServer({
    address: '127.0.0.1',
    port: 0,
    handler: fsHandler(root),
    engine: TFTP_ENGINE,
    onTransfer: (e) => {
      events.push(e);
      wake();
    },
    ...o,
  });
  servers.push(server);
  await server.start();
  expect(server.engine).toBe(TFTP_ENGINE);
  /** Resolves once n transfers have ended (their onTransfer event), or fails after a generous 10 s. */
  const ended = (n: number): Promise<void> =>
    Promise.race([
      new Promise<void>((resolve) => {
        wake = () => events.length >= n && resolve();
        wake();
      }),
      deadline(10_000, `expected ${n} finished transfer(s), got ${events.length}`),
    ]);
  return { server, port: server.address().port, events, ended };
}

const peers: RawPeer[] = [];
afterEach(async () => {
  await Promise.all(peers.splice(0).map((p) => p.close()));
});
async function peer(address?: string): Promise<RawPeer> {
  const p = await new RawPeer().open(address);
  peers.push(p);
  return p;
}

async function recv(p: RawPeer, ms?: number): Promise<Packet & { port: number }> {
  const { msg, port } = await p.next(ms);
  const r = decode(msg);
  if (!r.ok) throw new Error(`undecodable reply: ${r.error.detail}`);
  return { ...r.packet, port };
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** ACK a lockstep transfer (default blksize) from its first DATA to its last. */
async function drain(p: RawPeer, first: Packet & { port: number }): Promise<void> {
  let d = first;
  for (;;) {
    if (d.type !== 'data') throw new Error(`expected DATA, got ${d.type}`);
    p.send(encodeAck(d.block), d.port);
    if (d.data.length < 512) return;
    d = await recv(p);
  }
}

describe('option negotiation', () => {
  it('answers known options in an OACK, clamps them, ignores unknown ones', async () => {
    const { port } = await start();
    const p = await peer();
    p.send(encodeRrq('small', 'octet', { blksize: 100000, tsize: 0, timeout: 3, windowsize: 1000, 'x-frobnicate': 1 }), port);
    const oack = await recv(p);
    expect(oack).toMatchObject({ type: 'oack' });
    expect(oack.type === 'oack' && { ...oack.options }).toEqual({ blksize: '65464', tsize: '3000', timeout: '3', windowsize: '64' });
    p.send(encodeAck(0), oack.port);
    const d = await recv(p);
    expect(d.type === 'data' && [d.block, d.data.equals(files.get('small')!)]).toEqual([1, true]);
    p.send(encodeAck(1), oack.port);
  });

  it('clamps to the configured maxima and ignores out-of-range values', async () => {
    const { port } = await start({ maxBlksize: 1468, maxWindowsize: 8 });
    const p = await peer();
    p.send(encodeRrq('small', 'octet', { blksize: 9000, windowsize: 9 }), port);
    const o1 = await recv(p);
    expect(o1.type === 'oack' && { ...o1.options }).toEqual({ blksize: '1468', windowsize: '8' });
    p.send(encodeError(8, 'enough'), o1.port);
    const q = await peer();
    q.send(encodeRrq('small', 'octet', { blksize: 7, windowsize: 0, timeout: 256, foo: 'bar' }), port);
    const d = await recv(q); // no acceptable option: plain RFC 1350 answer
    expect(d).toMatchObject({ type: 'data', block: 1 });
    expect(d.type === 'data' && d.data.length).toBe(512);
  });

  it('leaves tsize out when the handler does not know the size', async () => {
    const handler: TftpHandler = async () => ({ stream: Readable.from([Buffer.from('hello')]) });
    const { port } = await start({ handler });
    const p = await peer();
    p.send(encodeRrq('x', 'octet', { tsize: 0, blksize: 1024 }), port);
    const o = await recv(p);
    expect(o.type === 'oack' && { ...o.options }).toEqual({ blksize: '1024' });
    const q = await peer();
    q.send(encodeRrq('x', 'octet', { tsize: 0 }), port);
    expect(await recv(q)).toMatchObject({ type: 'data', block: 1 });
  });

  it('treats netascii as octet and refuses other modes', async () => {
    const { port, server } = await start();
    const r = await tftpGet('127.0.0.1', port, 'small', { mode: 'netascii' });
    expect(r.data.equals(files.get('small')!)).toBe(true);
    const p = await peer();
    p.send(encodeRrq('small', 'mail'), port);
    expect(await recv(p)).toMatchObject({ type: 'error', code: 4 });
    expect(server.stats.refused).toBe(1);
  });
});

describe('refusals and errors', () => {
  it('refuses WRQ with ERROR 2', async () => {
    const { port, server } = await start();
    const p = await peer();
    p.send(encodeWrq('upload.bin'), port);
    expect(await recv(p)).toMatchObject({ type: 'error', code: 2 });
    expect(server.stats).toMatchObject({ refused: 1, active: 0, rrq: 0 });
  });

  it.each([
    ['../etc/passwd', 2],
    ['/etc/passwd', 2],
    ['sub/../../etc/passwd', 2],
    ['..\\etc\\passwd', 2],
    ['passwd-link', 2],
    ['sub', 2],
    ['missing', 1],
  ])('answers %s with ERROR %i', async (path, code) => {
    const { port, events, ended } = await start();
    const p = await peer();
    p.send(encodeRrq(path), port);
    expect(await recv(p)).toMatchObject({ type: 'error', code });
    await ended(1);
    expect(events[0]).toMatchObject({ ok: false, path, bytes: 0 });
  });

  it('passes handler errors on: TftpError code/message, anything else as ERROR 0', async () => {
    const handler: TftpHandler = async (path) => {
      if (path === 'deny') throw new TftpError(2, 'not your file');
      throw new Error('database on fire');
    };
    const { port } = await start({ handler });
    const p = await peer();
    p.send(encodeRrq('deny'), port);
    expect(await recv(p)).toMatchObject({ type: 'error', code: 2, message: 'not your file' });
    p.send(encodeRrq('boom'), port);
    const e = await recv(p);
    expect(e).toMatchObject({ type: 'error', code: 0 });
    expect(e.type === 'error' && e.message).not.toMatch(/fire/); // internals stay inside
  });

  it('a handler that never answers fails the transfer instead of holding its slot', async () => {
    const { port, server, ended } = await start({ handler: () => new Promise(() => {}), timeoutMs: 50, retries: 1 });
    const p = await peer();
    p.send(encodeRrq('hang'), port);
    expect(await recv(p)).toMatchObject({ type: 'error', code: 0, message: 'Handler timed out' });
    await ended(1);
    expect(server.stats).toMatchObject({ active: 0, failed: 1 });
  });

  it('stop() does not wait for a hanging handler', async () => {
    let called!: () => void;
    const handlerCalled = new Promise<void>((r) => (called = r));
    const handler: TftpHandler = () => (called(), new Promise(() => {}));
    const { port, server } = await start({ handler, timeoutMs: 60_000 });
    const p = await peer();
    p.send(encodeRrq('hang'), port);
    await handlerCalled;
    servers.splice(servers.indexOf(server), 1);
    // stop() gives up waiting after a 2 s fallback; with that timer faked (never firing) it
    // returns only if the transfer's socket really closed. How fast it returns: npm run bench.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      await Promise.race([server.stop(), deadline(10_000, 'stop() returned only through its fallback timer: the transfer never closed')]);
    } finally {
      vi.useRealTimers();
    }
    expect(server.stats).toMatchObject({ active: 0, failed: 1 });
    expect(await recv(p)).toMatchObject({ type: 'error', code: 0, message: 'Server shutting down' });
  });

  it('a read error mid-stream ends the transfer with ERROR 0', async () => {
    const handler: TftpHandler = async () => ({
      stream: Readable.from(
        (async function* () {
          yield Buffer.alloc(2048, 1);
          await sleep(20);
          throw new Error('disk gone');
        })(),
      ),
    });
    const { port, events, ended, server } = await start({ handler });
    const p = await peer();
    p.send(encodeRrq('x'), port);
    for (let b = 1; ; b++) {
      const d = await recv(p);
      if (d.type === 'error') break;
      expect(d).toMatchObject({ type: 'data', block: b });
      p.send(encodeAck(b), d.port);
    }
    await ended(1);
    expect(events[0]).toMatchObject({ ok: false, error: 'Read error', bytes: 2048 });
    expect(server.stats.active).toBe(0);
  });

  it('sends ERROR 5 to a stranger and keeps the transfer going', async () => {
    const { port, events, ended } = await start();
    const a = await peer();
    const b = await peer();
    a.send(encodeRrq('small'), port);
    const d1 = await recv(a);
    expect(d1).toMatchObject({ type: 'data', block: 1 });
    b.send(encodeAck(1), d1.port);
    b.send(encodeError(0, 'go away'), d1.port); // would abort the transfer if it came from the client
    expect(await recv(b)).toMatchObject({ type: 'error', code: 5, port: d1.port });
    expect(await recv(b)).toMatchObject({ type: 'error', code: 5 });
    for (let blk = 1; blk <= 6; blk++) {
      a.send(encodeAck(blk), d1.port);
      if (blk < 6) expect(await recv(a)).toMatchObject({ type: 'data', block: blk + 1 });
    }
    await ended(1);
    expect(events[0]).toMatchObject({ ok: true, bytes: 3000 });
  });

  it('bounds concurrency: the transfer beyond maxTransfers waits for a slot (delayed, never refused)', async () => {
    const { port, server, ended } = await start({ maxTransfers: 2 });
    const [a, b, c] = [await peer(), await peer(), await peer()];
    a.send(encodeRrq('small'), port);
    b.send(encodeRrq('small'), port);
    const da = await recv(a);
    const db = await recv(b);
    c.send(encodeRrq('small'), port);
    c.send(encodeRrq('small'), port); // its retransmission: still one waiting request
    // b's transfer runs to its end: by then the server has handled c's RRQs (one socket, in order)
    await drain(b, db);
    await ended(1);
    // b's slot went to c, without c asking again and without an error
    const dc = await recv(c);
    expect(dc).toMatchObject({ type: 'data', block: 1 });
    expect(server.stats).toMatchObject({ refused: 0, delayed: 1, waiting: 0 });
    a.send(encodeError(0, 'bye'), da.port);
    await drain(c, dc);
    await ended(3);
    expect(server.stats.active).toBe(0);
  });

  it('one client address holds at most maxPerClient transfers; another client is served at once', async () => {
    const { port, server, ended } = await start({ maxTransfers: 8, maxPerClient: 2 });
    const hog = [await peer('127.0.0.21'), await peer('127.0.0.21'), await peer('127.0.0.21')];
    const [h1, h2, h3] = hog;
    h1!.send(encodeRrq('small'), port);
    h2!.send(encodeRrq('small'), port);
    const d1 = await recv(h1!);
    await recv(h2!);
    h3!.send(encodeRrq('small'), port); // third from the same address: waits
    const other = await peer('127.0.0.22');
    other.send(encodeRrq('small'), port);
    const d = await recv(other); // served while the hog's third still waits
    expect(d).toMatchObject({ type: 'data', block: 1 });
    expect(server.stats).toMatchObject({ active: 3, waiting: 1, delayed: 1, refused: 0 });
    expect(h3!.inbox).toEqual([]); // no error, no data yet (the other client's DATA came after its RRQ)
    await drain(h1!, d1); // the hog's own slot frees: its third starts
    expect(await recv(h3!)).toMatchObject({ type: 'data', block: 1 });
    await ended(1);
  });

  it('ignores a client-chosen timeout above maxClientTimeoutS (no slot held for minutes)', async () => {
    const { port } = await start({ maxClientTimeoutS: 5 });
    const p = await peer();
    p.send(encodeRrq('small', 'octet', { timeout: 255, blksize: 1024 }), port);
    const o = await recv(p);
    expect(o.type === 'oack' && o.options).toEqual({ blksize: '1024' });
    const q = await peer();
    q.send(encodeRrq('small', 'octet', { timeout: 3, blksize: 1024 }), port);
    const o2 = await recv(q);
    expect(o2.type === 'oack' && o2.options).toEqual({ blksize: '1024', timeout: '3' });
  });

  it('a client that stops ACKing: retransmits, then fails and frees the slot', async () => {
    const { port, server, events, ended } = await start({ timeoutMs: 100, retries: 3 });
    const p = await peer();
    p.send(encodeRrq('small'), port);
    const d1 = await recv(p);
    p.send(encodeAck(1), d1.port);
    const seen: Packet[] = [];
    for (;;) {
      const x = await recv(p);
      seen.push(x);
      if (x.type === 'error') break;
    }
    // block 2 once + 3 retransmissions, then the error
    expect(seen.map((x) => (x.type === 'data' ? x.block : x.type))).toEqual([2, 2, 2, 2, 'error']);
    await ended(1);
    expect(events[0]).toMatchObject({ ok: false, error: 'Transfer timed out', bytes: 512 });
    expect(server.stats).toMatchObject({ active: 0, failed: 1, completed: 0 });
  });

  it('a client ERROR ends the transfer; stop() aborts the rest', async () => {
    const { port, server, events, ended } = await start();
    const [a, b] = [await peer(), await peer()];
    a.send(encodeRrq('f5m'), port);
    b.send(encodeRrq('f5m'), port);
    const da = await recv(a);
    await recv(b);
    a.send(encodeError(0, 'user abort'), da.port);
    await ended(1);
    expect(events[0]).toMatchObject({ ok: false, error: 'client error 0: user abort' });
    servers.splice(servers.indexOf(server), 1);
    await server.stop();
    expect(await recv(b)).toMatchObject({ type: 'error', code: 0 });
    expect(server.stats).toMatchObject({ active: 0, failed: 2 });
  });

  it('ignores a retransmitted RRQ instead of starting a second transfer', async () => {
    const { port, server, events, ended } = await start();
    const p = await peer();
    p.send(encodeRrq('small', 'octet', { blksize: 1024 }), port);
    p.send(encodeRrq('small', 'octet', { blksize: 1024 }), port);
    // The listener handles its packets in order: once this WRQ is refused, both RRQs were seen.
    p.send(encodeWrq('marker'), port);
    const [x, y] = [await recv(p), await recv(p)]; // the OACK (transfer port) and the refusal (listener), in either order
    const o = x.port === port ? y : x;
    expect(o.type).toBe('oack');
    expect(x.port === port ? x : y).toMatchObject({ type: 'error', code: 2, port });
    expect(server.stats).toMatchObject({ rrq: 2, active: 1, refused: 1 });
    p.send(encodeAck(0), o.port);
    for (let b = 1; b <= 3; b++) {
      expect(await recv(p)).toMatchObject({ type: 'data', block: b, port: o.port }); // no second transfer's OACK in between
      p.send(encodeAck(b), o.port);
    }
    await ended(1);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ ok: true, bytes: 3000, blksize: 1024 });
  });
});

describe('retransmission and windows', () => {
  it('duplicate ACKs never trigger resends (no Sorcerer\'s Apprentice)', async () => {
    const { port } = await start({ timeoutMs: 60_000 }); // the retransmission timer stays out of this
    const p = await peer();
    p.send(encodeRrq('small'), port);
    const d1 = await recv(p);
    p.send(encodeAck(1), d1.port);
    expect(await recv(p)).toMatchObject({ type: 'data', block: 2 });
    for (let i = 0; i < 5; i++) p.send(encodeAck(1), d1.port); // duplicates of the previous ACK
    p.send(encodeAck(77), d1.port); // stale / bogus
    // The transfer handles its packets in order: any resend caused by the ACKs above would
    // arrive before the answer to this one.
    p.send(encodeAck(2), d1.port);
    expect(await recv(p)).toMatchObject({ type: 'data', block: 3 });
    p.send(encodeAck(3), d1.port);
    expect(await recv(p)).toMatchObject({ type: 'data', block: 4 });
    expect(p.inbox).toEqual([]);

    for (const windowsize of [1, 8]) {
      const r = await tftpGet('127.0.0.1', port, 'b200', { duplicateAcks: true, options: { windowsize } });
      expect(r.data.equals(files.get('b200')!)).toBe(true);
      expect(r.dataPackets).toBe(201); // every block exactly once
    }
  });

  it('windowsize: sends N blocks, and an ACK inside the window resumes right after it', async () => {
    const { port, events, ended } = await start({ timeoutMs: 60_000 }); // the retransmission timer stays out of this
    const p = await peer();
    p.send(encodeRrq('small', 'octet', { windowsize: 4 }), port); // 3000 bytes = blocks 1..6
    const o = await recv(p);
    const tid = o.port;
    p.send(encodeAck(0), tid);
    const blocks = async (n: number) => {
      const got: number[] = [];
      for (let i = 0; i < n; i++) {
        const d = await recv(p);
        got.push(d.type === 'data' ? d.block : -1);
      }
      return got;
    };
    expect(await blocks(4)).toEqual([1, 2, 3, 4]);
    // The window waits for its ACK: had block 5 gone out early, it would come before these.
    p.send(encodeAck(2), tid); // 3 was "lost": resume at 3
    expect(await blocks(4)).toEqual([3, 4, 5, 6]);
    p.send(encodeAck(2), tid); // the same ACK again (as tftp-hpa does on timeout): no rewind loop
    p.send(encodeAck(2), tid);
    // Packets are handled in order: a rewind caused by the repeated ACKs would arrive before 5, 6.
    p.send(encodeAck(4), tid);
    expect(await blocks(2)).toEqual([5, 6]);
    p.send(encodeAck(6), tid);
    await ended(1);
    expect(p.inbox).toEqual([]);
    expect(events[0]).toMatchObject({ ok: true, bytes: 3000, windowsize: 4 });
  });

  it('a timeout resends the whole unacknowledged window (go-back-N)', async () => {
    const { port } = await start({ timeoutMs: 150 });
    const p = await peer();
    p.send(encodeRrq('f5m', 'octet', { windowsize: 3 }), port);
    const o = await recv(p);
    p.send(encodeAck(0), o.port);
    const got: number[] = [];
    for (let i = 0; i < 6; i++) {
      const d = await recv(p);
      got.push(d.type === 'data' ? d.block : -1);
    }
    expect(got).toEqual([1, 2, 3, 1, 2, 3]);
    p.send(encodeError(0, 'done'), o.port);
  });

  it.each([
    [1468, 4],
    [1468, 16],
    [512, 64],
    // Not larger: 16 × 8 KB already overflows the client's default 208 KB receive buffer
    // (skb overhead counts), the window's tail is lost every time and each window costs a
    // client timeout. The client picks the window; RFC 7440 has no congestion control.
    [8192, 8],
  ])('the test client fetches 5 MB with blksize %i windowsize %i', async (blksize, windowsize) => {
    const { port, events, ended } = await start();
    const r = await tftpGet('127.0.0.1', port, 'f5m', { options: { blksize, windowsize, tsize: 0 } });
    expect(r.oack).toEqual({ blksize: String(blksize), windowsize: String(windowsize), tsize: String(SIZES.f5m) });
    expect(r.data.equals(files.get('f5m')!)).toBe(true);
    await ended(1);
    expect(events[0]).toMatchObject({ ok: true, bytes: SIZES.f5m, blksize, windowsize });
  });

  it('rewinds correctly when DATA is lost inside and at the end of windows', async () => {
    const { port } = await start({ timeoutMs: 100 });
    const lost = new Set([3, 8, 9, 20, 33, 100, 101, 102, 163, 201]); // first copy of each is dropped
    const r = await tftpGet('127.0.0.1', port, 'b200', {
      options: { windowsize: 8 },
      timeoutMs: 1000,
      dropData: (block, seen) => seen === 1 && lost.has(block),
    });
    expect(r.data.equals(files.get('b200')!)).toBe(true);
    expect(r.gaps).toBeGreaterThanOrEqual(5);
    // each loss costs at most one window of resends: no rewind loop
    expect(r.dataPackets).toBeLessThanOrEqual(201 + lost.size * 8);
  });

  it('rolls block numbers over past 65535, also across a window', async () => {
    const { port, events, ended } = await start();
    const r = await tftpGet('127.0.0.1', port, 'big', { options: { windowsize: 16 } });
    expect(r.data.equals(files.get('big')!)).toBe(true);
    await ended(1);
    expect(events[0]).toMatchObject({ ok: true, bytes: SIZES.big });
  });

  it('streams from the handler without reading it whole: reads a bounded amount ahead of the client', async () => {
    const CHUNK = 1000;
    const TOTAL = 4000 * CHUNK; // 4 MB, far beyond the server's read-ahead (256 KB for this window)
    const byte = (i: number) => (i * 7) & 0xff;
    let produced = 0; // bytes the server has pulled out of the handler's stream
    let paused!: Promise<void>;
    const handler: TftpHandler = async () => {
      const stream = new Readable({
        highWaterMark: CHUNK,
        read() {
          if (produced >= TOTAL) return void this.push(null);
          const c = Buffer.alloc(CHUNK);
          for (let i = 0; i < CHUNK; i++) c[i] = byte(produced + i);
          produced += CHUNK;
          this.push(c);
        },
      });
      paused = new Promise((r) => stream.once('pause', () => r()));
      return { stream, size: TOTAL };
    };
    const { port, events, ended } = await start({ handler, timeoutMs: 60_000 }); // no retransmissions while the client pauses
    const p = await peer();
    p.send(encodeRrq('gen', 'octet', { blksize: 1400, windowsize: 4 }), port);
    const o = await recv(p);
    expect(o.type).toBe('oack');
    p.send(encodeAck(0), o.port);
    const got: Buffer[] = [];
    for (let b = 1; b <= 4; b++) {
      const d = await recv(p);
      expect(d).toMatchObject({ type: 'data', block: b });
      if (d.type === 'data') got.push(d.data);
    }
    // The client now holds its ACK. The server must stop reading (pause the stream) with only
    // its read-ahead buffered; a server that reads the file whole never pauses the stream.
    await Promise.race([paused, deadline(10_000, `the server never paused the handler's stream (read ${produced} of ${TOTAL} bytes)`)]);
    expect(produced).toBeLessThan(512 * 1024);
    // Then the rest streams to the end, byte for byte.
    p.send(encodeAck(4), o.port);
    for (let b = 5; ; b++) {
      const d = await recv(p);
      if (d.type !== 'data') throw new Error(`expected DATA ${b}, got ${d.type}`);
      expect(d.block).toBe(b);
      got.push(d.data);
      const last = d.data.length < 1400;
      if (b % 4 === 0 || last) p.send(encodeAck(b), o.port);
      if (last) break;
    }
    await ended(1);
    expect(events[0]).toMatchObject({ ok: true, bytes: TOTAL });
    const all = Buffer.concat(got);
    expect(all.length).toBe(TOTAL);
    expect(all.every((x, i) => x === byte(i))).toBe(true);
  });
});
