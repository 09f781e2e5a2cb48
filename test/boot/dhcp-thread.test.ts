/**
 * The DHCP server on its own thread (src/boot/dhcp/thread.ts): the same answers as on the main thread
 * (a relay at 127.0.0.2 gets OFFER and ACK for a reserved MAC, nothing for an unknown one), the
 * reservation asked of the main thread once per request, its events and stats back on the main thread,
 * and a thread that dies started again on the same port.
 */
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { decodePacket, encodePacket, MsgType, newRequest, Opt, type DhcpPacket } from '../../src/boot/dhcp/packet.js';
import type { DhcpEvent, DhcpRequestInfo } from '../../src/boot/dhcp/server.js';
import { DhcpThread } from '../../src/boot/dhcp/thread.js';
import { until } from '../helpers/until.js';
import { onPrivatePort } from './udp-port.js';

const KNOWN = '02:00:00:00:05:01';
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
        lookup: async (info) => (asked.push(info), info.mac === KNOWN ? { ip: '127.0.0.9', hostname: 'b1', bootFile: 'boot.scr.uimg' } : null),
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

it('a thread that dies is started again on the same port', async () => {
  await dhcp.thread!.terminate();
  await until('restarted', () => (dhcp.restarts === 1 && dhcp.thread) || undefined, { timeoutMs: 5000 });
  const offer = await until('answers again', () => exchange(KNOWN, MsgType.DISCOVER, 500), { timeoutMs: 10_000 });
  expect(offer.options.get(Opt.MSG_TYPE)?.[0]).toBe(MsgType.OFFER);
});
