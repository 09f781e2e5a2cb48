/**
 * 100,000 random and mutated datagrams at the listening port and at live transfer ports
 * (from the transfer's own client port, so they get past the TID check into the decoder).
 * Afterwards the server must still serve correctly, have counted malformed packets, hold no
 * transfers and no leaked memory.
 */
import dgram from 'node:dgram';
import { rm } from 'node:fs/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, expect, it } from 'vitest';
import { fsHandler } from '../../src/boot/tftp/fs-handler.js';
import { encodeAck, encodeData, encodeError, encodeOack, encodeRrq, encodeWrq } from '../../src/boot/tftp/packet.js';
import { TftpServer } from '../../src/boot/tftp/server.js';
import { prng } from '../helpers/lossy-proxy.js';
import { makeTree, tftpGet, TFTP_ENGINE } from '../helpers/tftp-test-client.js';

const TOTAL = 100_000;
const BATCH = 250;

let root = '';
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

const TEMPLATES = [
  encodeRrq('small'),
  encodeRrq('small', 'octet', { blksize: 1468, tsize: 0, windowsize: 8, timeout: 1 }),
  encodeRrq('missing', 'netascii'),
  encodeWrq('small'),
  encodeAck(0),
  encodeAck(1),
  encodeAck(65535),
  encodeData(1, Buffer.alloc(16, 0x41)),
  encodeError(0, 'x'),
  encodeOack({ blksize: 512 }),
];

function mutator(seed: number): () => Buffer {
  const r = prng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  return () => {
    const kind = int(5);
    if (kind === 0) return bytes(int(64)); // pure noise
    const b = Buffer.from(TEMPLATES[int(TEMPLATES.length)]!);
    if (kind === 1) {
      for (let i = 1 + int(4); i > 0; i--) if (b.length) b[int(b.length)] = int(256); // flipped bytes
      return b;
    }
    if (kind === 2) return b.subarray(0, int(b.length + 1)); // truncated
    if (kind === 3) return Buffer.concat([b, bytes(1 + int(40))]); // extended
    b.writeUInt16BE(int(9), 0); // opcode swapped, body kept
    return b;
  };
}

it('survives 100k random and mutated packets, then still serves correctly', { timeout: 90_000 }, async () => {
  const tree = await makeTree({ small: 3000, f5m: 5 * 1024 * 1024 });
  root = tree.dir;
  // Short timeouts so the transfers the fuzz starts (and then abandons) end quickly.
  let transferEnded = (): void => {};
  const server = new TftpServer({
    address: '127.0.0.1',
    port: 0,
    handler: fsHandler(root),
    engine: TFTP_ENGINE,
    timeoutMs: 100,
    retries: 2,
    maxTransfers: 32,
    onTransfer: () => transferEnded(),
  });
  await server.start();
  const port = server.address().port;
  // vitest runs without --expose-gc: switch it on and take gc from a fresh context. Without a
  // real gc the heap numbers below would measure garbage, not leaks.
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as unknown;
  if (typeof gc !== 'function') throw new Error('gc() is not available: the heap check would be meaningless');
  gc();
  const heap0 = process.memoryUsage().heapUsed;

  const sockets: dgram.Socket[] = [];
  const open = async (onMsg?: (m: Buffer, r: dgram.RemoteInfo) => void) => {
    const s = dgram.createSocket('udp4');
    s.on('message', onMsg ?? (() => {}));
    await new Promise<void>((res) => s.bind(0, '127.0.0.1', res));
    sockets.push(s);
    return s;
  };
  const noise = [await open(), await open(), await open()];

  // A transfer client that never ACKs properly: the fuzz speaks for it on its transfer port.
  let client!: dgram.Socket;
  let tid = 0;
  const newTransfer = async () => {
    let replied!: () => void;
    const first = new Promise<void>((res) => (replied = res));
    client = await open((_m, r) => {
      if (r.port !== port) tid = r.port;
      replied();
    });
    tid = 0;
    client.send(encodeRrq('f5m', 'octet', { blksize: 512 }), port, '127.0.0.1');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([first, new Promise((_, rej) => (timer = setTimeout(() => rej(new Error('no answer to the victim RRQ in 10 s')), 10_000)))]);
    clearTimeout(timer);
  };
  await newTransfer();

  const next = mutator(20240229);
  let sentToTid = 0;
  for (let sent = 0, batch = 0; sent < TOTAL; batch++) {
    for (let i = 0; i < BATCH && sent < TOTAL; i++, sent++) {
      const pkt = next();
      // A well-formed ERROR from the client would (rightly) end the victim transfer at once.
      if (tid && i % 2 === 0 && !(pkt[0] === 0 && pkt[1] === 5)) {
        client.send(pkt, tid, '127.0.0.1');
        sentToTid++;
      } else noise[sent % noise.length]!.send(pkt, port, '127.0.0.1');
    }
    // let the sockets drain (bounded: one macrotask per batch) and renew the victim transfer
    await new Promise((res) => setImmediate(res));
    if (batch % 20 === 19) {
      client.close();
      sockets.splice(sockets.indexOf(client), 1);
      await newTransfer();
    }
  }
  expect(sentToTid).toBeGreaterThan(TOTAL / 4);

  await Promise.all(sockets.map((s) => new Promise<void>((res) => s.close(() => res()))));
  // Every abandoned transfer times out (3 × 100 ms) and reports its end: wait for the last one.
  if (server.stats.active > 0) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((res) => (transferEnded = () => server.stats.active === 0 && res())),
      new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`${server.stats.active} transfers still active after 20 s`)), 20_000))),
    ]);
    clearTimeout(timer);
  }
  expect(server.stats.active).toBe(0);
  expect(server.stats.malformed).toBeGreaterThan(1000);

  const r = await tftpGet('127.0.0.1', port, 'f5m', { options: { blksize: 1468, windowsize: 8 } });
  expect(r.data.equals(tree.files.get('f5m')!)).toBe(true);

  gc();
  const grown = process.memoryUsage().heapUsed - heap0;
  console.log(`tftp fuzz: heap +${(grown / 2 ** 20).toFixed(1)} MB; stats ${JSON.stringify(server.stats)}`);
  expect(grown).toBeLessThan(50 * 1024 * 1024);
  await server.stop();
  expect(server.stats.active).toBe(0);
});
