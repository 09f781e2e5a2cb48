/**
 * The DHCP server on its own thread (src/boot/dhcp/thread.ts): the same answers as on the main thread
 * (a relay at 127.0.0.2 gets OFFER and ACK for a reserved MAC, nothing for an unknown one), the
 * reservation asked of the main thread once per request (also in a burst, where lookups and events
 * cross in batches, and a lookup that fails fails only its own request), its events and stats back on
 * the main thread, and a thread that dies started again on the same port.
 */
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { decodePacket, encodePacket, MsgType, newRequest, Opt, type DhcpPacket } from '../../src/boot/dhcp/packet.js';
import type { DhcpEvent, DhcpRequestInfo } from '../../src/boot/dhcp/server.js';
import { DhcpThread, LookupBatches } from '../../src/boot/dhcp/thread.js';
import { until } from '../helpers/until.js';
import { onPrivatePort } from './udp-port.js';

const KNOWN = '02:00:00:00:05:01';
const FAILING = '02:00:00:00:05:ee'; // its lookup throws (the inventory broke for this one)
const events: DhcpEvent[] = [];
const asked: DhcpRequestInfo[] = [];
let dhcp: DhcpThread;
let relay: dgram.Socket;
let port = 0;
const got: DhcpPacket[] = [];
let xid = randomInt(1, 2 ** 30);

beforeAll(async () => {
  ({ port, value: { dhcp, relay } } = await onPrivatePort(
    3, // the thread's two sockets and the relay
    async (p) => {
      const d = new DhcpThread({
        serverAddress: '127.0.0.1',
        port: p,
        subnet: '127.0.0.0/8',
        lookup: async (info) => {
          asked.push(info);
          if (info.mac === FAILING) throw new Error('inventory down');
          return info.mac === KNOWN ? { ip: '127.0.0.9', hostname: 'b1', bootFile: 'boot.scr.uimg' } : null;
        },
        onEvent: (ev) => events.push(ev),
      });
      await d.start();
      const r = dgram.createSocket({ type: 'udp4', reuseAddr: true });
      await new Promise<void>((res) => r.bind({ address: '127.0.0.2', port: p }, res));
      r.on('message', (b) => got.push(decodePacket(b)));
      return { dhcp: d, relay: r };
    },
    async ({ dhcp: d, relay: r }) => {
      r.close();
      await d.stop();
    },
  ));
});
afterAll(async () => {
  relay?.close();
  await dhcp?.stop();
});

/** Sends a request as the relay; the reply with its xid, or undefined after `ms`. */
async function exchange(mac: string, type: number, ms = 3000): Promise<DhcpPacket | undefined> {
  const p = newRequest(mac, ++xid, type);
  p.giaddr = '127.0.0.2';
  if (type === MsgType.REQUEST) {
    p.options.set(Opt.REQUESTED_IP, Buffer.from([127, 0, 0, 9]));
    p.options.set(Opt.SERVER_ID, Buffer.from([127, 0, 0, 1]));
  }
  relay.send(encodePacket(p), port, '127.0.0.1');
  return until(`reply to xid ${p.xid}`, () => got.find((g) => g.xid === p.xid), { timeoutMs: ms }).catch(() => undefined);
}

it('answers a reserved MAC with OFFER and ACK, asks the main thread once per request, reports events and stats', async () => {
  const offer = await exchange(KNOWN, MsgType.DISCOVER);
  expect([offer?.options.get(Opt.MSG_TYPE)?.[0], offer?.yiaddr]).toEqual([MsgType.OFFER, '127.0.0.9']);
  const ack = await exchange(KNOWN, MsgType.REQUEST);
  expect(ack?.options.get(Opt.MSG_TYPE)?.[0]).toBe(MsgType.ACK);
  expect(asked.map((a) => [a.mac, a.msgType])).toEqual([[KNOWN, MsgType.DISCOVER], [KNOWN, MsgType.REQUEST]]);
  await until('events on the main thread', () => events.filter((e) => e.type === 'offer' || e.type === 'ack').length === 2 || undefined, { timeoutMs: 3000 });
  await until('stats from the thread', () => (dhcp.stats.offers === 1 && dhcp.stats.acks === 1) || undefined, { timeoutMs: 3000 });
});

it('does not answer an unknown MAC (its marker, a known MAC sent after it, is answered)', async () => {
  const p = newRequest('02:00:00:00:05:99', ++xid, MsgType.DISCOVER);
  p.giaddr = '127.0.0.2';
  relay.send(encodePacket(p), port, '127.0.0.1');
  expect(await exchange(KNOWN, MsgType.DISCOVER)).toBeDefined();
  expect(got.find((g) => g.xid === p.xid)).toBeUndefined();
});

it('a burst: every request asked once and answered; a lookup that fails costs only its own request', async () => {
  const sent: DhcpPacket[] = [];
  for (let i = 0; i < 40; i++) {
    const p = newRequest(i % 10 === 5 ? FAILING : KNOWN, ++xid, MsgType.DISCOVER);
    p.giaddr = '127.0.0.2';
    sent.push(p);
  }
  asked.length = 0;
  events.length = 0;
  for (const p of sent) relay.send(encodePacket(p), port, '127.0.0.1'); // back to back: one poll reads several
  const answered = sent.filter((p) => p.chaddr[5] !== 0xee);
  await until('an OFFER for each known request', () => answered.every((p) => got.some((g) => g.xid === p.xid)) || undefined, { timeoutMs: 5000 });
  await until('every event', () => events.filter((e) => e.type === 'offer' || e.type === 'ignored').length === sent.length || undefined, { timeoutMs: 3000 });
  expect(asked.map((a) => a.xid).sort()).toEqual(sent.map((p) => p.xid).sort());
  expect(got.filter((g) => g.chaddr[5] === 0xee && sent.some((p) => p.xid === g.xid))).toEqual([]);
  const failed = events.filter((e) => e.type === 'ignored');
  expect(failed.map((e) => [e.mac, e.reason])).toEqual(Array(4).fill([FAILING, 'lookup failed: Error: inventory down']));
});

it('a batch of lookups: answered in order, one failure alone, and the first looked up before the rest (one cache miss, not a hundred)', async () => {
  let warm = false;
  let misses = 0;
  const batches = new LookupBatches(async (info) => {
    if (!warm) {
      misses++; // a cold cache: every lookup started before it is warm would rescan
      await new Promise((r) => setTimeout(r, 5));
      warm = true;
    }
    if (info.mac === FAILING) throw new Error('no');
    return { ip: `127.0.0.${info.xid}` };
  });
  const infos = (from: number) => Array.from({ length: 5 }, (_, i) => ({ mac: i === 2 ? FAILING : KNOWN, msgType: 1, xid: from + i, giaddr: '0.0.0.0', ciaddr: '0.0.0.0', paramRequestList: [] }));
  const [a, b] = await Promise.all([batches.answer(infos(10)), batches.answer(infos(20))]);
  expect(misses).toBe(1);
  expect(a).toEqual([{ value: { ip: '127.0.0.10' } }, { value: { ip: '127.0.0.11' } }, { error: 'no' }, { value: { ip: '127.0.0.13' } }, { value: { ip: '127.0.0.14' } }]);
  expect(b.map((x) => ('value' in x ? x.value?.ip : x.error))).toEqual(['127.0.0.20', '127.0.0.21', 'no', '127.0.0.23', '127.0.0.24']);
});

it('a batch whose lookup hangs holds the next batch up only for a bounded time', async () => {
  const batches = new LookupBatches((info) => (info.xid === 1 ? new Promise(() => {}) : Promise.resolve({ ip: '127.0.0.9' })), 50);
  const info = (xid: number) => ({ mac: KNOWN, msgType: 1, xid, giaddr: '0.0.0.0', ciaddr: '0.0.0.0', paramRequestList: [] });
  void batches.answer([info(1)]); // never answered
  expect(await batches.answer([info(2)])).toEqual([{ value: { ip: '127.0.0.9' } }]);
});

it('a thread that dies is started again on the same port', async () => {
  await dhcp.thread!.terminate();
  await until('restarted', () => (dhcp.restarts === 1 && dhcp.thread) || undefined, { timeoutMs: 5000 });
  const offer = await until('answers again', () => exchange(KNOWN, MsgType.DISCOVER, 500), { timeoutMs: 10_000 });
  expect(offer.options.get(Opt.MSG_TYPE)?.[0]).toBe(MsgType.OFFER);
});
