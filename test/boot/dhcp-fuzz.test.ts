/**
 * 100,000 random and mutated packets at a server on 127.0.0.1 (loopback only). Templates are
 * relayed (giaddr 127.0.0.2) for enrolled MACs, so mutations also drive the reply path; the server
 * only unicasts inside its subnet (127.0.0.0/8) and broadcasts through lo, so nothing leaves the host.
 * Seeded PRNG: a failure prints the seed, DHCP_FUZZ_SEED=<n> replays it.
 */
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DhcpServer } from '../../src/boot/dhcp/server.js';
import { MsgType, Opt, decodePacket, encodePacket, newRequest, optIps, optStr, optU16 } from '../../src/boot/dhcp/packet.js';
import { onPrivatePort } from './udp-port.js';

const TOTAL = 100_000;
const BATCH = 32;
const WINDOW = 64; // max packets in flight in the kernel socket buffer
const SERVER = '127.0.0.1';
const RELAY = '127.0.0.2';
const MACS = ['02:f0:00:00:00:01', '02:f0:00:00:00:02', '02:f0:00:00:00:03'];
const seed = Number(process.env.DHCP_FUZZ_SEED ?? randomInt(1, 2 ** 31));

/** mulberry32: tiny, fast, good enough to make byte noise reproducible. */
function prng(a: number): () => number {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = prng(seed);
const int = (n: number): number => Math.floor(rnd() * n);
const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));

function templates(): Buffer[] {
  return MACS.flatMap((mac, i) => {
    const d = newRequest(mac, 0x1000 + i, MsgType.DISCOVER);
    d.giaddr = RELAY;
    d.options.set(Opt.PARAM_REQUEST_LIST, Buffer.from([1, 3, 6, 12, 15, 28, 60, 66, 67]));
    d.options.set(Opt.VENDOR_CLASS, optStr('PXEClient:Arch:00011:UNDI:003016'));
    d.options.set(Opt.CLIENT_ARCH, optU16(11));
    d.options.set(Opt.UUID, Buffer.concat([Buffer.from([0]), Buffer.alloc(16, i)]));
    d.options.set(Opt.MAX_MESSAGE_SIZE, optU16(1024));
    const r = newRequest(mac, 0x2000 + i, MsgType.REQUEST);
    r.giaddr = RELAY;
    r.options.set(Opt.SERVER_ID, optIps([SERVER]));
    r.options.set(Opt.REQUESTED_IP, optIps([`127.30.0.${i + 1}`]));
    r.options.set(Opt.HOSTNAME, optStr(`board-${i}`));
    const inf = newRequest(mac, 0x3000 + i, MsgType.INFORM);
    inf.giaddr = RELAY;
    inf.ciaddr = `127.30.0.${i + 1}`;
    return [encodePacket(d), encodePacket(r), encodePacket(inf)];
  });
}

/** One hostile packet: pure noise, or a template with flipped bytes / truncation / bad option lengths. */
function mutate(tpls: Buffer[]): Buffer {
  const base = Buffer.from(tpls[int(tpls.length)]!);
  const optEnd = base.indexOf(Opt.END, 240);
  switch (int(8)) {
    case 0:
      return bytes(int(700));
    case 1: {
      for (let n = 1 + int(8); n > 0; n--) base[int(base.length)] = int(256);
      return base;
    }
    case 2:
      return base.subarray(0, int(base.length));
    case 3: {
      // corrupt one option's length byte (options start at 240; 53 is first: its length is at 241)
      const at = 241 + 2 * int(Math.max(1, (optEnd - 241) / 2));
      base[Math.min(at, base.length - 1)] = int(256);
      return base;
    }
    case 4: {
      // huge option length at the end of the option area
      const tail = Buffer.from([12 + int(200), 255, ...bytes(int(40))]);
      return Buffer.concat([base.subarray(0, optEnd), tail]);
    }
    case 5: {
      // structurally valid random options after a valid header: exercises the per-option checks
      const opts: number[] = [53, 1, 1 + int(9)];
      for (let n = int(12); n > 0; n--) {
        const len = int(20);
        opts.push(1 + int(254), len, ...bytes(len));
      }
      opts.push(255);
      return Buffer.concat([base.subarray(0, 240), Buffer.from(opts)]);
    }
    case 6: {
      // header field noise: op/htype/hlen/flags/addresses, options intact
      for (const off of [0, 1, 2, 10, 12, 16, 24, 28]) if (rnd() < 0.3) base[off] = int(256);
      return base;
    }
    default: {
      // option overload with garbage in sname/file
      bytes(192).copy(base, 44);
      return Buffer.concat([base.subarray(0, 240), Buffer.from([53, 1, 1, 52, 1, 1 + int(3), 255])]);
    }
  }
}

let server: DhcpServer;
let sock: dgram.Socket;
let port: number;
const replies: Buffer[] = [];

let onReply = (): void => {};

beforeAll(async () => {
  // server (127.0.0.1 + 0.0.0.0) and our relay socket: 3 sockets, alone on their port
  ({ port } = await onPrivatePort(
    3,
    async (p) => {
      server = new DhcpServer({
        serverAddress: SERVER,
        port: p,
        subnet: '127.0.0.0/8',
        lookup: async (info) => {
          const i = MACS.indexOf(info.mac);
          return i < 0 ? null : { ip: `127.30.0.${i + 1}`, hostname: `board-${i}`, bootFile: 'fuzz/boot.scr' };
        },
      });
      await server.start();
      sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
      sock.on('message', (b) => {
        if (replies.length < 10_000) replies.push(b);
        onReply();
      });
      await new Promise<void>((r) => sock.bind({ address: RELAY, port: p }, r));
    },
    async () => {
      await new Promise<void>((r) => sock.close(() => r()));
      await server.stop();
    },
  ));
});

afterAll(async () => {
  await new Promise<void>((r) => (sock ? sock.close(() => r()) : r()));
  await server?.stop();
});

describe(`dhcp server fuzz (seed ${seed})`, () => {
  it('survives 100k random and mutated packets and still serves', { timeout: 90_000 }, async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as unknown;
    if (typeof gc !== 'function') throw new Error('gc() is not available: the heap check would be meaningless');
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    const tpls = templates();
    const started = Date.now();

    for (let sent = 0; sent < TOTAL; ) {
      const batch = Array.from({ length: Math.min(BATCH, TOTAL - sent) }, () => mutate(tpls));
      await Promise.all(batch.map((b) => new Promise<void>((r) => sock.send(b, port, SERVER, () => r()))));
      sent += batch.length;
      // Sender and server share this event loop: yield until the server has read most of what is
      // queued, so the socket buffer isn't simply overrun. Bounded wait: a drop must not hang us.
      for (let spins = 0; spins < 200 && sent - server.stats.received > WINDOW; spins++) {
        await new Promise((r) => setImmediate(r));
      }
    }
    const elapsed = Date.now() - started;

    // The server handles its socket's packets in order: once this DISCOVER is answered, every
    // fuzz packet before it has been handled (or dropped by the kernel). Re-sent every second,
    // as a client would, in case the kernel dropped it too.
    const d = newRequest(MACS[0]!, 0xf00d, MsgType.DISCOVER);
    d.giaddr = RELAY;
    replies.length = 0;
    const isOffer = (b: Buffer): boolean => b.length >= 8 && b.readUInt32BE(4) === 0xf00d;
    let resend: NodeJS.Timeout | undefined;
    let giveUp: NodeJS.Timeout | undefined;
    const offer = await new Promise<Buffer | undefined>((resolve) => {
      onReply = () => {
        const hit = replies.find(isOffer);
        if (hit) resolve(hit);
      };
      const send = (): void => sock.send(encodePacket(d), port, SERVER);
      send();
      resend = setInterval(send, 1000);
      giveUp = setTimeout(() => resolve(undefined), 20_000);
    });
    clearInterval(resend);
    clearTimeout(giveUp);

    gc();
    const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
    const s = server.stats;
    console.log(`fuzz seed=${seed} ${TOTAL} sent in ${elapsed} ms (bound: npm run bench); stats ${JSON.stringify(s)}; heap +${(heapGrowth / 2 ** 20).toFixed(1)} MB`);

    expect(offer, 'valid DISCOVER after fuzzing answered within 20 s').toBeDefined();
    expect(decodePacket(offer!).options.get(Opt.MSG_TYPE)?.[0]).toBe(MsgType.OFFER);
    expect(s.received).toBeGreaterThan(TOTAL * 0.9); // loopback may drop a few under burst
    expect(s.malformed).toBeGreaterThan(0);
    expect(s.offers + s.acks).toBeGreaterThan(0); // mutations that stayed valid were served
    expect(heapGrowth).toBeLessThan(50 * 2 ** 20);
  });
});
