/**
 * Protocol behaviour over loopback. The test plays a relay agent at 127.0.0.2 (giaddr), so the
 * server answers it by unicast to 127.0.0.2:<server port> — no broadcast, no namespaces, and a
 * port checked to hold only our sockets (./udp-port.ts) keeps it clear of any other DHCP server.
 * "No reply" is proved by a marker: a request the server must answer, sent after the one it must
 * ignore; the server handles a socket's packets in order, so a reply to the first would come first.
 */
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DhcpServer, type DhcpEvent, type DhcpRequestInfo, type DhcpReservation, type DhcpServerOptions } from '../../src/boot/dhcp/server.js';
import { onPrivatePort } from './udp-port.js';
import { FLAG_BROADCAST, MsgType, Opt, decodePacket, encodePacket, newRequest, optIps, optStr, optU16, type DhcpPacket } from '../../src/boot/dhcp/packet.js';

const SERVER = '127.0.0.1';
const RELAY = '127.0.0.2';
const GOLDEN = join(dirname(fileURLToPath(import.meta.url)), '../golden/dhcp-offer.bin');

class Relay {
  private readonly got: DhcpPacket[] = [];
  private waiters: Array<() => void> = [];
  constructor(readonly sock: dgram.Socket, readonly port: number) {
    sock.on('message', (b) => {
      try {
        this.got.push(decodePacket(b));
      } catch {
        /* not for us */
      }
      this.waiters.splice(0).forEach((w) => w());
    });
  }
  static async open(port: number): Promise<Relay> {
    const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    await new Promise<void>((r) => sock.bind({ address: RELAY, port }, r));
    return new Relay(sock, port);
  }
  send(p: DhcpPacket | Buffer): void {
    if (!Buffer.isBuffer(p)) p.giaddr = RELAY;
    this.sock.send(Buffer.isBuffer(p) ? p : encodePacket(p), this.port, SERVER);
  }
  /** The next reply with this xid, or null after `ms`. */
  async reply(xid: number, ms = 1500): Promise<DhcpPacket | null> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.got.findIndex((p) => p.xid === xid);
      if (i >= 0) return this.got.splice(i, 1)[0]!;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => (clearTimeout(t), r()));
      });
    }
  }
  /**
   * Sends `marker`, which the server must answer, after `ignored` (already sent from this
   * socket) and waits for that answer; by then any reply to `ignored` would have arrived.
   */
  async markerAfter(ignored: DhcpPacket[], marker: DhcpPacket): Promise<DhcpPacket> {
    this.send(marker);
    const m = await this.reply(marker.xid, 10_000);
    if (!m) throw new Error(`no reply to the marker request (xid ${marker.xid}) in 10 s`);
    const xids = new Set(ignored.map((p) => p.xid));
    expect(this.got.filter((p) => xids.has(p.xid)).map((p) => [p.xid, msgType(p)])).toEqual([]);
    return m;
  }
  close(): Promise<void> {
    return new Promise((r) => this.sock.close(() => r()));
  }
}

const msgType = (p: DhcpPacket | null): number | undefined => p?.options.get(Opt.MSG_TYPE)?.[0];
const str = (p: DhcpPacket, code: number): string | undefined => p.options.get(code)?.toString();
const ip = (p: DhcpPacket, code: number): string | undefined => {
  const v = p.options.get(code);
  return v ? [...v].join('.') : undefined;
};

let port: number;
const reservations = new Map<string, DhcpReservation>();
const events: DhcpEvent[] = [];
const lookups: DhcpRequestInfo[] = [];
let server: DhcpServer;
let relay: Relay;
let xidSeq = randomInt(1, 2 ** 30);

function request(mac: string, type: number, opts: Record<number, Buffer> = {}): DhcpPacket {
  const p = newRequest(mac, xidSeq++, type);
  for (const [k, v] of Object.entries(opts)) p.options.set(Number(k), v);
  return p;
}

/** The server (its 127.0.0.1 and 0.0.0.0 sockets) and the relay: 3 sockets, alone on their port. */
async function startWithRelay(o: Omit<DhcpServerOptions, 'serverAddress' | 'port' | 'subnet'>) {
  return onPrivatePort(
    3,
    async (p) => {
      const srv = new DhcpServer({ serverAddress: SERVER, port: p, subnet: '127.0.0.0/8', ...o });
      await srv.start();
      return { srv, relay: await Relay.open(p) };
    },
    async ({ srv, relay }) => {
      await relay.close();
      await srv.stop();
    },
  );
}

beforeAll(async () => {
  ({
    port,
    value: { srv: server, relay },
  } = await startWithRelay({
    router: '127.0.0.1',
    dns: ['127.0.0.53', '127.0.0.54'],
    domain: 'lab.dozen',
    leaseSeconds: 600,
    lookup: async (info) => {
      lookups.push(info);
      if (info.hostname === 'boom') throw new Error('inventory down');
      return reservations.get(info.mac) ?? null;
    },
    onEvent: (ev) => {
      events.push(ev);
      if (ev.info?.hostname === 'boom') throw new Error('listener bug');
    },
  }));
});

afterAll(async () => {
  await relay?.close();
  await server?.stop();
});

beforeEach(() => {
  events.length = 0;
  lookups.length = 0;
});

describe('dhcp server over loopback (relay path)', () => {
  it('answers a relayed DISCOVER with an OFFER carrying the reservation and boot options', async () => {
    const mac = '02:00:00:00:10:01';
    reservations.set(mac, { ip: '127.10.0.5', hostname: 'rpi-01', bootFile: 'boards/rpi-01/boot.scr', nextServer: '127.0.0.9' });
    const d = request(mac, MsgType.DISCOVER, { [Opt.PARAM_REQUEST_LIST]: Buffer.from([1, 3, 6, 12, 15, 28]) });
    relay.send(d);
    const o = await relay.reply(d.xid);
    expect(msgType(o)).toBe(MsgType.OFFER);
    expect(o!.op).toBe(2);
    expect(o!.yiaddr).toBe('127.10.0.5');
    expect(o!.giaddr).toBe(RELAY);
    expect(o!.siaddr).toBe('127.0.0.9');
    expect(o!.file).toBe('boards/rpi-01/boot.scr');
    expect(o!.sname).toBe('127.0.0.9');
    expect(ip(o!, Opt.SUBNET_MASK)).toBe('255.0.0.0');
    expect(ip(o!, Opt.ROUTER)).toBe('127.0.0.1');
    expect([...o!.options.get(Opt.DNS)!]).toEqual([127, 0, 0, 53, 127, 0, 0, 54]);
    expect(str(o!, Opt.HOSTNAME)).toBe('rpi-01');
    expect(str(o!, Opt.DOMAIN)).toBe('lab.dozen');
    expect(ip(o!, Opt.BROADCAST)).toBe('127.255.255.255');
    expect(o!.options.get(Opt.LEASE_TIME)!.readUInt32BE(0)).toBe(600);
    expect(ip(o!, Opt.SERVER_ID)).toBe(SERVER);
    expect(str(o!, Opt.TFTP_SERVER)).toBe('127.0.0.9');
    expect(str(o!, Opt.BOOTFILE)).toBe('boards/rpi-01/boot.scr');
    // option 55 order first, boot options after, even though they were not asked for
    const codes = [...o!.options.keys()];
    expect(codes.slice(0, 3)).toEqual([Opt.MSG_TYPE, Opt.SERVER_ID, Opt.LEASE_TIME]);
    expect(codes.slice(3, 9)).toEqual([1, 3, 6, 12, 15, 28]);
    expect(codes.slice(9)).toEqual([Opt.TFTP_SERVER, Opt.BOOTFILE]);
    expect(events.find((e) => e.type === 'offer')).toMatchObject({ mac, ip: '127.10.0.5' });
    expect(lookups[0]).toMatchObject({ mac, msgType: MsgType.DISCOVER, giaddr: RELAY, ciaddr: '0.0.0.0' });
  });

  it('ACKs a REQUEST naming us with the reserved address, NAKs a wrong one', async () => {
    const mac = '02:00:00:00:10:02';
    reservations.set(mac, { ip: '127.10.0.6' });
    const good = request(mac, MsgType.REQUEST, { [Opt.SERVER_ID]: optIps([SERVER]), [Opt.REQUESTED_IP]: optIps(['127.10.0.6']) });
    relay.send(good);
    const ack = await relay.reply(good.xid);
    expect(msgType(ack)).toBe(MsgType.ACK);
    expect(ack!.yiaddr).toBe('127.10.0.6');
    expect(ack!.siaddr).toBe(SERVER); // nextServer defaults to us
    expect(ack!.options.has(Opt.TFTP_SERVER)).toBe(false); // no boot info reserved → no 66/67

    const bad = request(mac, MsgType.REQUEST, { [Opt.SERVER_ID]: optIps([SERVER]), [Opt.REQUESTED_IP]: optIps(['127.10.0.99']) });
    relay.send(bad);
    const nak = await relay.reply(bad.xid);
    expect(msgType(nak)).toBe(MsgType.NAK);
    expect(nak!.yiaddr).toBe('0.0.0.0');
    expect(nak!.flags & FLAG_BROADCAST).toBe(FLAG_BROADCAST);
    expect(nak!.options.has(Opt.LEASE_TIME)).toBe(false);
    expect(events.map((e) => e.type)).toEqual(['ack', 'nak']);
  });

  it('stays silent for a REQUEST naming another server', async () => {
    const mac = '02:00:00:00:10:03';
    reservations.set(mac, { ip: '127.10.0.7' });
    const before = server.stats.ignored;
    const r = request(mac, MsgType.REQUEST, { [Opt.SERVER_ID]: optIps(['127.0.0.77']), [Opt.REQUESTED_IP]: optIps(['127.10.0.7']) });
    relay.send(r);
    await relay.markerAfter([r], request(mac, MsgType.DISCOVER));
    expect(events[0]).toEqual(expect.objectContaining({ type: 'ignored', mac, reason: expect.stringContaining('127.0.0.77') }));
    expect(events.map((e) => e.type)).toEqual(['ignored', 'offer']);
    expect(server.stats.ignored).toBe(before + 1);
  });

  it('handles renew (ciaddr, no option 54/50): ACK if it matches, NAK if not', async () => {
    const mac = '02:00:00:00:10:04';
    reservations.set(mac, { ip: '127.10.0.8' });
    const renew = request(mac, MsgType.REQUEST);
    renew.ciaddr = '127.10.0.8';
    relay.send(renew);
    const ack = await relay.reply(renew.xid);
    expect(msgType(ack)).toBe(MsgType.ACK);
    expect(ack!.ciaddr).toBe('127.10.0.8');
    const stale = request(mac, MsgType.REQUEST);
    stale.ciaddr = '127.10.0.200';
    relay.send(stale);
    expect(msgType(await relay.reply(stale.xid))).toBe(MsgType.NAK);
  });

  it('does not serve an unknown MAC and reports it', async () => {
    const mac = '02:00:00:00:10:05';
    const d = request(mac, MsgType.DISCOVER);
    relay.send(d);
    reservations.set('02:00:00:00:10:55', { ip: '127.10.0.55' });
    await relay.markerAfter([d], request('02:00:00:00:10:55', MsgType.DISCOVER));
    expect(events[0]).toEqual(expect.objectContaining({ type: 'unknown', mac }));
    expect(events.map((e) => e.type)).toEqual(['unknown', 'offer']);
  });

  it('offers to a PXE DISCOVER with options 60/93/97 and 60 in its parameter request list', async () => {
    const mac = '02:00:00:00:10:06';
    reservations.set(mac, { ip: '127.10.0.9', bootFile: 'ipxe.efi' });
    const uuid = Buffer.concat([Buffer.from([0]), Buffer.from('4c4c4544003510538034c4c04f503032', 'hex')]);
    const d = request(mac, MsgType.DISCOVER, {
      [Opt.MAX_MESSAGE_SIZE]: optU16(1260),
      [Opt.PARAM_REQUEST_LIST]: Buffer.from([1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135]),
      [Opt.CLIENT_ARCH]: optU16(0x000b),
      [Opt.CLIENT_NDI]: Buffer.from([1, 3, 16]),
      [Opt.UUID]: uuid,
      [Opt.VENDOR_CLASS]: optStr('PXEClient:Arch:00011:UNDI:003016'),
    });
    relay.send(d);
    const o = await relay.reply(d.xid);
    expect(msgType(o)).toBe(MsgType.OFFER);
    expect(str(o!, Opt.VENDOR_CLASS)).toBe('PXEClient');
    expect(str(o!, Opt.BOOTFILE)).toBe('ipxe.efi');
    expect(o!.file).toBe('ipxe.efi');
    expect(lookups[0]).toMatchObject({ vendorClass: 'PXEClient:Arch:00011:UNDI:003016', clientArch: 11, uuid: '4c4c4544-0035-1053-8034-c4c04f503032' });
    expect(lookups[0]!.paramRequestList).toContain(60);
  });

  it('sends option 60 only to a client that sent it, and survives a broken option 97', async () => {
    const mac = '02:00:00:00:10:07';
    reservations.set(mac, { ip: '127.10.0.10', bootFile: 'u-boot.scr' });
    const d = request(mac, MsgType.DISCOVER, {
      [Opt.PARAM_REQUEST_LIST]: Buffer.from([60, 66, 67]),
      [Opt.UUID]: Buffer.from([0, 1, 2]),
      [Opt.CLIENT_ARCH]: Buffer.from([1]),
    });
    relay.send(d);
    const o = await relay.reply(d.xid);
    expect(msgType(o)).toBe(MsgType.OFFER);
    expect(o!.options.has(Opt.VENDOR_CLASS)).toBe(false);
    expect(lookups[0]!.uuid).toBeUndefined();
    expect(lookups[0]!.clientArch).toBeUndefined();
  });

  it('keeps replies within option 57 / 576 bytes and always keeps the boot options', async () => {
    const mac = '02:00:00:00:10:08';
    reservations.set(mac, { ip: '127.10.0.11', hostname: 'h'.repeat(250), bootFile: `${'d/'.repeat(60)}boot.scr` });
    const d = request(mac, MsgType.DISCOVER, { [Opt.PARAM_REQUEST_LIST]: Buffer.from([12, 1, 3]) });
    relay.send(d);
    const o = await relay.reply(d.xid);
    const raw = encodePacket(o!); // re-encode to measure: same options, same layout
    expect(raw.length).toBeLessThanOrEqual(548);
    expect(str(o!, Opt.BOOTFILE)).toBe(`${'d/'.repeat(60)}boot.scr`);
    expect(str(o!, Opt.TFTP_SERVER)).toBe(SERVER);

    const big = request(mac, MsgType.DISCOVER, { [Opt.PARAM_REQUEST_LIST]: Buffer.from([12, 1, 3]), [Opt.MAX_MESSAGE_SIZE]: optU16(1500) });
    relay.send(big);
    const o2 = await relay.reply(big.xid);
    expect(str(o2!, Opt.HOSTNAME)).toBe('h'.repeat(250));
  });

  it('answers INFORM with an ACK without lease time or yiaddr', async () => {
    const mac = '02:00:00:00:10:09';
    reservations.set(mac, { ip: '127.10.0.12', bootFile: 'x.scr' });
    const inf = request(mac, MsgType.INFORM);
    inf.ciaddr = '127.10.0.12';
    relay.send(inf);
    const ack = await relay.reply(inf.xid);
    expect(msgType(ack)).toBe(MsgType.ACK);
    expect(ack!.yiaddr).toBe('0.0.0.0');
    expect(ack!.ciaddr).toBe('127.10.0.12');
    expect(ack!.options.has(Opt.LEASE_TIME)).toBe(false);
    expect(str(ack!, Opt.BOOTFILE)).toBe('x.scr');
    expect(events.map((e) => e.type)).toEqual(['inform']);
  });

  it('reports RELEASE and DECLINE without replying', async () => {
    const mac = '02:00:00:00:10:0a';
    reservations.set(mac, { ip: '127.10.0.13' });
    const rel = request(mac, MsgType.RELEASE, { [Opt.SERVER_ID]: optIps([SERVER]) });
    rel.ciaddr = '127.10.0.13';
    const dec = request(mac, MsgType.DECLINE, { [Opt.SERVER_ID]: optIps([SERVER]), [Opt.REQUESTED_IP]: optIps(['127.10.0.13']) });
    relay.send(rel);
    relay.send(dec);
    await relay.markerAfter([rel, dec], request(mac, MsgType.DISCOVER));
    expect(events.map((e) => [e.type, e.ip])).toEqual([
      ['release', '127.10.0.13'],
      ['decline', '127.10.0.13'],
      ['offer', '127.10.0.13'],
    ]);
  });

  it('drops malformed packets, counts them and keeps serving', async () => {
    const mac = '02:00:00:00:10:0b';
    reservations.set(mac, { ip: '127.10.0.14' });
    const before = server.stats.malformed;
    const good = encodePacket(request(mac, MsgType.DISCOVER));
    const reply = Buffer.from(good);
    reply[0] = 2; // a BOOTREPLY sent to a server
    for (const b of [Buffer.alloc(10), good.subarray(0, 241), reply, Buffer.concat([good.subarray(0, 240), Buffer.from([53, 1, 1, 55, 250, 1])])]) {
      relay.send(b);
    }
    const d = request(mac, MsgType.DISCOVER);
    relay.send(d);
    expect(msgType(await relay.reply(d.xid))).toBe(MsgType.OFFER);
    expect(server.stats.malformed - before).toBe(4);
    expect(events.filter((e) => e.type === 'malformed')).toHaveLength(4);
  });

  it('ignores relays outside the subnet, lookup failures and survives a throwing listener', async () => {
    const mac = '02:00:00:00:10:0c';
    reservations.set(mac, { ip: '127.10.0.15' });
    const foreign = request(mac, MsgType.DISCOVER);
    foreign.giaddr = '192.0.2.1'; // must never be answered: it's not on our boot network
    relay.sock.send(encodePacket(foreign), port, SERVER);
    const d = request(mac, MsgType.DISCOVER, { [Opt.HOSTNAME]: optStr('boom') }); // lookup throws, and so does the event listener
    relay.send(d);
    const again = await relay.markerAfter([foreign, d], request(mac, MsgType.DISCOVER));
    expect(msgType(again)).toBe(MsgType.OFFER);
    expect(events.map((e) => e.type)).toEqual(['ignored', 'ignored', 'offer']);
    expect(events[0]!.reason).toMatch(/relay 192.0.2.1 outside/);
    expect(events[1]!.reason).toMatch(/lookup failed/);
  });

  it('matches the golden OFFER byte for byte', async () => {
    const mac = '02:de:ad:be:ef:01';
    reservations.set(mac, { ip: '127.10.1.1', hostname: 'golden', bootFile: 'boards/golden/boot.scr' });
    const d = newRequest(mac, 0x0badcafe, MsgType.DISCOVER);
    d.options.set(Opt.PARAM_REQUEST_LIST, Buffer.from([1, 3, 6, 12, 15, 28, 66, 67]));
    d.options.set(Opt.VENDOR_CLASS, optStr('U-Boot.armv7'));
    d.options.set(Opt.MAX_MESSAGE_SIZE, optU16(576));
    d.options.set(Opt.CLIENT_ARCH, optU16(0x15));
    relay.send(d);
    const raw = await new Promise<Buffer>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no OFFER in 10 s')), 10_000);
      const on = (b: Buffer): void => {
        if (b.length >= 8 && b.readUInt32BE(4) === 0x0badcafe) {
          clearTimeout(t);
          relay.sock.off('message', on);
          resolve(b);
        }
      };
      relay.sock.on('message', on);
    });
    await relay.reply(0x0badcafe, 0); // drain the decoded copy
    if (process.env.UPDATE_GOLDEN === '1' || !existsSync(GOLDEN)) {
      if (process.env.CI && !existsSync(GOLDEN)) throw new Error(`golden file missing: ${GOLDEN}`);
      mkdirSync(dirname(GOLDEN), { recursive: true });
      writeFileSync(GOLDEN, raw);
    }
    expect(raw.toString('hex')).toBe(readFileSync(GOLDEN).toString('hex'));
  });

  it('uses a discovery pool for unknown MACs: offers, binds, releases, declines, runs dry', async () => {
    const pevents: DhcpEvent[] = [];
    const {
      value: { srv: pool, relay: prelay },
    } = await startWithRelay({
      pool: { start: '127.20.0.1', end: '127.20.0.2' },
      lookup: async () => null,
      onEvent: (e) => pevents.push(e),
    });
    try {
      // INFORM is answered whatever the pool holds, and changes nothing: the marker for "no OFFER".
      const inform = () => request('02:00:00:00:20:ff', MsgType.INFORM);
      const dora = async (mac: string): Promise<string | null> => {
        const d = request(mac, MsgType.DISCOVER);
        prelay.send(d);
        await prelay.markerAfter([], inform());
        const o = await prelay.reply(d.xid, 0); // already here if it was sent: it came before the marker's answer
        if (!o) return null;
        const r = request(mac, MsgType.REQUEST, { [Opt.SERVER_ID]: optIps([SERVER]), [Opt.REQUESTED_IP]: optIps([o.yiaddr]) });
        prelay.send(r);
        const a = await prelay.reply(r.xid);
        expect(msgType(a)).toBe(MsgType.ACK);
        return a!.yiaddr;
      };
      const a = await dora('02:00:00:00:20:01');
      const b = await dora('02:00:00:00:20:02');
      expect(new Set([a, b])).toEqual(new Set(['127.20.0.1', '127.20.0.2']));
      expect(await dora('02:00:00:00:20:01')).toBe(a); // same MAC, same lease
      expect(await dora('02:00:00:00:20:03')).toBeNull();
      expect(pevents.at(-2)).toMatchObject({ type: 'ignored', reason: 'pool exhausted' }); // the last one is the marker's

      // another MAC can't take a bound address
      const steal = request('02:00:00:00:20:03', MsgType.REQUEST, { [Opt.SERVER_ID]: optIps([SERVER]), [Opt.REQUESTED_IP]: optIps([a!]) });
      prelay.send(steal);
      expect(msgType(await prelay.reply(steal.xid))).toBe(MsgType.NAK);

      const rel = request('02:00:00:00:20:01', MsgType.RELEASE, { [Opt.SERVER_ID]: optIps([SERVER]) });
      rel.ciaddr = a!;
      prelay.send(rel); // handled before the next DISCOVER: same socket, in order
      expect(await dora('02:00:00:00:20:03')).toBe(a);

      // DECLINE takes the address out of the pool
      const dec = request('02:00:00:00:20:03', MsgType.DECLINE, { [Opt.SERVER_ID]: optIps([SERVER]), [Opt.REQUESTED_IP]: optIps([a!]) });
      prelay.send(dec);
      expect(await dora('02:00:00:00:20:04')).toBeNull();
      expect(pevents.filter((e) => e.type === 'decline')).toHaveLength(1);
    } finally {
      await prelay.close();
      await pool.stop();
    }
  });

  it('fails start() cleanly when serverAddress is not on this host', async () => {
    const s = new DhcpServer({ serverAddress: '10.255.255.254', port, subnet: '10.255.255.0/24', lookup: async () => null });
    await expect(s.start()).rejects.toThrow(/cannot bind 10.255.255.254/);
    await s.stop();
  });

  it('rejects bad configuration up front', () => {
    const base = { serverAddress: SERVER, subnet: '127.0.0.0/8', lookup: async () => null };
    expect(() => new DhcpServer({ ...base, serverAddress: 'nope' })).toThrow(/serverAddress/);
    expect(() => new DhcpServer({ ...base, subnet: '127.0.0.1/8' })).toThrow(/host bits/);
    expect(() => new DhcpServer({ ...base, pool: { start: '10.0.0.1', end: '10.0.0.9' } })).toThrow(/pool/);
    expect(() => new DhcpServer({ ...base, port: 70000 })).toThrow(/port/);
  });
});
